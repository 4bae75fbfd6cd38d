package router

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
			bw.WriteString("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, close\r\nX-App: raw\r\nBad Name: x\r\nX-Ctl: a\x01b\r\n\r\nuntil close")
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
		t.Errorf("a response until close, with headers HTTP/2 cannot carry: %q %v", body, resp.Header)
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

// On the event loops: small answers go from the loop into the h2
// connection; a gear that closed its pooled connection meanwhile, a
// slow gear (504), a gear gone mid-answer and many streams at once are
// handled as on the goroutines.
func TestH2DirectOnTheLoops(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(400 * time.Millisecond)
		case "/then-close": // a whole answer; the connection closed a little later
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
			bw.Flush()
			time.AfterFunc(50*time.Millisecond, func() { c.Close() })
			return
		case "/cut": // a length, then less
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
			bw.Flush()
			c.Close()
			return
		}
		io.WriteString(w, "small "+r.URL.Path)
	})
	r, st, ca := newTLSRouter(t, nil)
	app := blog
	app.ReadTimeout = 150 * time.Millisecond
	put(t, st, r, []store.App{app}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	if r.loops.Load() == nil {
		t.Skip("the router could not start its event loops on this host (epoll or eventfd refused), so there is no loop path to test; TestH2Direct covers the goroutines' path")
	}
	tr := h2Transport(r, ca.Roots())
	defer tr.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := tr.RoundTrip(mustRequest(t, "GET", "https://blog-acme.localhost"+path))
		if err != nil {
			return 0, err.Error()
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return resp.StatusCode, "read: " + err.Error()
		}
		return resp.StatusCode, string(b)
	}
	// Most, not all: on a loaded machine a pooled connection may be found
	// closed, or an answer come in two reads, and go to a goroutine.
	before := r.h2Looped.Load()
	for i := range 10 {
		if code, body := get(fmt.Sprintf("/a%d", i)); code != 200 || body != fmt.Sprintf("small /a%d", i) {
			t.Fatalf("GET: %d %q", code, body)
		}
	}
	if got := r.h2Looped.Load() - before; got < 6 {
		t.Errorf("%d of 10 small answers went from a loop", got)
	}
	// The gear closes a connection the router pooled: the next request
	// goes on a new one.
	if code, body := get("/then-close"); code != 200 || body != "first" {
		t.Errorf("GET /then-close: %d %q", code, body)
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 4 { // (on each loop's pool)
		if code, body := get(fmt.Sprintf("/after-close%d", i)); code != 200 || body != fmt.Sprintf("small /after-close%d", i) {
			t.Errorf("after the gear closed a pooled connection: %d %q", code, body)
		}
	}
	if code, _ := get("/slow"); code != http.StatusGatewayTimeout {
		t.Errorf("a slow gear: %d; want 504", code)
	}
	if code, body := get("/cut"); code == 200 && body == "only this" {
		t.Errorf("a cut answer reached the client as whole: %d %q", code, body)
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := get(fmt.Sprintf("/m%d", i)); code != 200 || body != fmt.Sprintf("small /m%d", i) {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Errorf("%d of 200 concurrent streams failed", bad.Load())
	}
}

// A gear that closes a pooled connection on the request written to it
// (before answering): the request goes again on a new connection.
func TestH2DirectRetriesWhenAPooledConnectionCloses(t *testing.T) {
	gear, accepted := oneAnswerGear(t)
	r, st, ca := newTLSRouter(t, nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": gear})
	tr := h2Transport(r, ca.Roots())
	defer tr.CloseIdleConnections()
	for i := range 8 {
		resp, err := tr.RoundTrip(mustRequest(t, "GET", "https://blog-acme.localhost/"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q; want 200 ok", i, resp.StatusCode, b)
		}
	}
	if n := accepted.Load(); n < 5 {
		t.Fatalf("the app accepted %d connections; the test needs its closes to be met", n)
	}
}
