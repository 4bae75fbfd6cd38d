package router

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// HTTP/2 requests reach gears on pooled HTTP/1.1 connections: bodies,
// chunked responses with trailers, streams flushed as they come, HEAD,
// 204, an app that closes, a slow app (504), and connections reused.
func TestH2Pooled(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %s", r.Method, len(b), b)
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("part one,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
			w.Header().Set("X-Sum", "42")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
			fmt.Fprint(w, "data: second\n\n")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "closing")
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "ok")
		}
	})
	r, st, ca := newTLSRouter(t, nil)
	app := blog
	app.ReadTimeout = 200 * time.Millisecond
	put(t, st, r, []store.App{app}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	tr := h2Transport(r, ca.Roots())
	defer tr.CloseIdleConnections()
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "https://blog-acme.localhost"+path, rd)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for range 5 {
		if resp, body := do("GET", "/", ""); resp.StatusCode != 200 || body != "ok" || resp.ProtoMajor != 2 {
			t.Fatalf("GET: %s %d %q", resp.Proto, resp.StatusCode, body)
		}
	}
	if _, body := do("POST", "/echo", "hello"); body != "POST 5 hello" {
		t.Errorf("POST: %q", body)
	}
	big := strings.Repeat("z", 1<<20)
	if _, body := do("PUT", "/echo", big); body != fmt.Sprintf("PUT %d %s", len(big), big) {
		t.Errorf("1 MiB PUT: %d bytes back", len(body))
	}
	if resp, body := do("GET", "/trailers", ""); body != "part one,part two" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("chunked with a trailer: %q %v", body, resp.Trailer)
	}
	if resp, body := do("HEAD", "/", ""); resp.StatusCode != 200 || body != "" || resp.ContentLength != 2 {
		t.Errorf("HEAD: %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, _ := do("GET", "/nocontent", ""); resp.StatusCode != 204 {
		t.Errorf("204: %d", resp.StatusCode)
	}
	if _, body := do("GET", "/close", ""); body != "closing" {
		t.Errorf("an app that closes: %q", body)
	}
	if resp, _ := do("GET", "/slow", ""); resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("a slow app: %d; want 504", resp.StatusCode)
	}
	// The first event arrives while the app still holds the response.
	req, _ := http.NewRequest("GET", "https://blog-acme.localhost/events", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan string, 1)
	go func() { l, _ := bufio.NewReader(resp.Body).ReadString('\n'); first <- l }()
	select {
	case l := <-first:
		if l != "data: first\n" {
			t.Errorf("first event: %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Error("the first event did not come before the end of the response")
	}
	close(release)
	resp.Body.Close()
	if n := conns.Load(); n > 5 {
		t.Errorf("the app saw %d connections; the pool should reuse them", n)
	}
}
