package router

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// The trusted-proxy rule is written as bytes on the fast path and for h2
// (pooled), and as headers on the net/http path; all must say the same
// thing to the gear. HTTP/1.1 requests take the fast path, HTTP/1.0 ones
// net/http, HTTP/2 ones the pooled connections.
func TestForwardedHeadersAlikeOnBothPaths(t *testing.T) {
	gear := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "for=%s host=%s proto=%s real=%s fwd=%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Real-IP"), r.Header.Get("Forwarded"))
	}))
	defer gear.Close()
	const sent = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 7.7.7.7\r\nForwarded: for=8.8.8.8\r\n"
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"untrusted", nil, "for=127.0.0.1 host=blog-acme.localhost proto=http real=127.0.0.1 fwd="},
		{"trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "for=6.6.6.6, 127.0.0.1 host=shop.example proto=https real=7.7.7.7 fwd=for=8.8.8.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, st, ca := newTLSRouter(t, func(o *Options) { o.TrustedProxies = tc.trusted })
			put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(gear.URL, "http://")})
			for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
				c, br := rawConn(t, r)
				fmt.Fprintf(c, "GET /hdr %s\r\nHost: blog-acme.localhost\r\n%s\r\n", proto, sent)
				if _, body := readResp(t, br, "GET"); body != tc.want {
					t.Errorf("%s: %q; want %q", proto, body, tc.want)
				}
			}
			req, _ := http.NewRequest("GET", "https://blog-acme.localhost/hdr", nil)
			for _, l := range strings.Split(strings.TrimSpace(sent), "\r\n") {
				k, v, _ := strings.Cut(l, ": ")
				req.Header.Set(k, v)
			}
			tr := h2Transport(r, ca.Roots())
			defer tr.CloseIdleConnections()
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := strings.Replace(tc.want, "proto=http ", "proto=https ", 1)
			if string(b) != want {
				t.Errorf("HTTP/2: %q; want %q", b, want)
			}
		})
	}
}
