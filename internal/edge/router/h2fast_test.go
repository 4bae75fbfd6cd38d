package router

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// HTTP/2 requests without a body take the fast path (serveH2Direct): the
// gear sees the request as HTTP/1.1 would send it, the response comes
// back without its connection headers, and what the fast path does not
// take (a body, the platform's host) still goes to ServeHTTP.
func TestH2Direct(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(3<<20))
			w.Write([]byte(strings.Repeat("b", 3<<20)))
		case "/raw": // an HTTP/1.0-style answer: no length, then close
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, close\r\nX-App: raw\r\n\r\nuntil close")
			bw.Flush()
			c.Close()
		default:
			var names []string
			for k := range r.Header {
				names = append(names, k)
			}
			fmt.Fprintf(w, "%s %s host=%s cookie=%q xff=%s proto=%s te=%q", r.Method, r.URL.RequestURI(), r.Host,
				r.Header.Get("Cookie"), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("Te"))
		}
	})
	r, st, ca := newTLSRouter(t, nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	tr := h2Transport(r, ca.Roots())
	defer tr.CloseIdleConnections()
	do := func(req *http.Request) (*http.Response, string) {
		t.Helper()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	before := r.h2Direct.Load()
	req, _ := http.NewRequest("GET", "https://blog-acme.localhost/p?q=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	req.Header.Set("Te", "trailers")
	_, body := do(req)
	want := `GET /p?q=1 host=blog-acme.localhost cookie="a=1; b=2" xff=127.0.0.1 proto=https te=""`
	if body != want {
		t.Errorf("the gear saw\n%s\nwant\n%s", body, want)
	}
	if got := r.h2Direct.Load() - before; got != 1 {
		t.Errorf("%d requests on the direct path; want 1", got)
	}

	resp, body := do(mustRequest(t, "GET", "https://blog-acme.localhost/big"))
	if len(body) != 3<<20 || resp.ContentLength != 3<<20 {
		t.Errorf("3 MiB response: %d bytes, length %d", len(body), resp.ContentLength)
	}
	resp, body = do(mustRequest(t, "GET", "https://blog-acme.localhost/raw"))
	if body != "until close" || resp.Header.Get("X-App") != "raw" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("a response until close: %q %v", body, resp.Header)
	}

	// A body goes through ServeHTTP.
	before = r.h2Direct.Load()
	post, _ := http.NewRequest("POST", "https://blog-acme.localhost/form", strings.NewReader("x=1"))
	if _, body := do(post); !strings.HasPrefix(body, "POST /form") {
		t.Errorf("POST: %q", body)
	}
	if r.h2Direct.Load() != before {
		t.Error("a request with a body took the direct path")
	}

	// A gear that is gone: the router's page, as the client asked for it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	put(t, st, r, []store.App{blog}, map[string]string{"g1": gone})
	req = mustRequest(t, "GET", "https://blog-acme.localhost/")
	req.Header.Set("Accept", "text/html")
	resp, body = do(req)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "<h1>App not responding</h1>") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("a gear gone: %d %q", resp.StatusCode, body)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
