package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// h3Client reaches the router's UDP port over HTTP/3 whatever the URL's
// host (quic-go's own client, a real HTTP/3 implementation).
func h3Client(r *Router, roots *x509.CertPool) *http.Client {
	addr := r.udp.LocalAddr().String()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tc, qc)
		},
	}}
}

// HTTP/3 serves apps and aliases by SNI like HTTPS over TCP, HTTPS
// responses advertise it (Alt-Svc on the same port), plain HTTP does not,
// and 0-RTT is refused.
func TestHTTP3(t *testing.T) {
	pub := newTestCA(t)
	r, st, ca := newTLSRouter(t, func(o *Options) { o.HTTP3 = true })
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	cert, key := pub.leaf(t, 102, "www.shop.test")
	write(t, st, r, func(tx *store.Tx) error {
		tx.Put(store.AliasKey("www.shop.test"), &store.Alias{Host: "www.shop.test", AppKey: blog.Key()})
		return tx.Put(store.CertKey("www.shop.test"), &store.Cert{Host: "www.shop.test", AppKey: blog.Key(), CertPEM: cert, KeyPEM: key})
	})
	if r.udp == nil || r.udp.LocalAddr().(*net.UDPAddr).Port != r.TLSAddr().(*net.TCPAddr).Port {
		t.Fatalf("HTTP/3 is not on the HTTPS port: %v vs %v", r.udp, r.TLSAddr())
	}
	for name, c := range map[string]struct {
		url   string
		roots *x509.CertPool
	}{"canonical": {"https://blog-acme.localhost/hdr", ca.Roots()}, "alias": {"https://www.shop.test/hdr", pub.pool}} {
		t.Run(name, func(t *testing.T) {
			resp, err := h3Client(r, c.roots).Get(c.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != "HTTP/3.0" || resp.StatusCode != 200 || !strings.HasSuffix(string(body), "|https") {
				t.Errorf("%s %d %q; want HTTP/3.0 200 with X-Forwarded-Proto https", resp.Proto, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Alt-Svc"); got != "" {
				t.Errorf("an HTTP/3 response advertises %q", got)
			}
		})
	}
	t.Run("https_advertises_it", func(t *testing.T) {
		resp, err := tlsClient(r, ca.Roots(), true).Get("https://blog-acme.localhost/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := `h3=":` + strings.TrimPrefix(r.TLSAddr().String()[strings.LastIndex(r.TLSAddr().String(), ":"):], ":") + `"; ma=86400`
		if got := resp.Header.Get("Alt-Svc"); got != want {
			t.Errorf("Alt-Svc %q; want %q", got, want)
		}
	})
	t.Run("plain_http_does_not", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+r.Addr().String()+"/", nil)
		req.Host = "blog-acme.localhost"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Alt-Svc"); got != "" {
			t.Errorf("plain HTTP advertises %q", got)
		}
	})
	t.Run("unknown_name_gets_no_certificate", func(t *testing.T) {
		if _, err := h3Client(r, ca.Roots()).Get("https://nobody.localhost/"); err == nil {
			t.Error("an HTTP/3 request for an unrouted name succeeded")
		}
	})
	t.Run("no_0rtt", func(t *testing.T) {
		// A session ticket first, then an early-data attempt: the server
		// does not accept it.
		tc := &tls.Config{RootCAs: ca.Roots(), ServerName: "blog-acme.localhost", NextProtos: []string{http3.NextProtoH3}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := quic.DialAddr(ctx, r.udp.LocalAddr().String(), tc, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the ticket arrives
		c.CloseWithError(0, "")
		e, err := quic.DialAddrEarly(ctx, r.udp.LocalAddr().String(), tc, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer e.CloseWithError(0, "")
		<-e.HandshakeComplete()
		if e.ConnectionState().Used0RTT {
			t.Error("the server accepted 0-RTT")
		}
	})
}
