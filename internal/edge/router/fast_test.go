package router

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// rawConn talks HTTP/1.1 by hand to the router, to see exactly what the
// fast path sends.
func rawConn(t *testing.T, r *Router) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// countingServer starts an app that counts the connections it is given
// (to see the router reuse its pooled ones).
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	conns := new(atomic.Int64)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, conns
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

func TestFastPathFraming(t *testing.T) {
	big := make([]byte, 1<<20)
	rand.Read(big)
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part one,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			w.Write(big)
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %x", r.Method, len(b), b[:min(len(b), 4)])
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "closing")
		case "/hdr":
			fmt.Fprintf(w, "%s|%s|%s|%s|%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"),
				r.Header.Get("Keep-Alive"), r.Header.Get("X-Custom"))
		default:
			io.WriteString(w, "ok")
		}
	})
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})

	c, br := rawConn(t, r)
	send := func(s string) { io.WriteString(c, s) }

	send("GET /chunked HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); body != "part one,part two" || resp.TransferEncoding == nil {
		t.Errorf("chunked: %q %v", body, resp.TransferEncoding)
	}
	send("GET /big HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if _, body := readResp(t, br, "GET"); !bytes.Equal([]byte(body), big) {
		t.Errorf("1 MiB body differs (%d bytes)", len(body))
	}
	send("HEAD /big HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if resp, body := readResp(t, br, "HEAD"); body != "" || resp.ContentLength != int64(len(big)) {
		t.Errorf("HEAD: %q length %d", body, resp.ContentLength)
	}
	send("GET /nocontent HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 204 {
		t.Errorf("204: %d", resp.StatusCode)
	}
	send("POST /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 5\r\n\r\nhello")
	if _, body := readResp(t, br, "POST"); body != "POST 5 68656c6c" {
		t.Errorf("small POST: %q", body)
	}
	// A body larger than the buffer, streamed.
	send(fmt.Sprintf("PUT /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: %d\r\n\r\n", len(big)))
	c.Write(big)
	if _, body := readResp(t, br, "PUT"); body != fmt.Sprintf("PUT %d %x", len(big), big[:4]) {
		t.Errorf("large PUT: %q", body)
	}
	// Pipelined requests come back in order.
	send("GET /a HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\nGET /hdr HTTP/1.1\r\nHost: blog-acme.localhost\r\nKeep-Alive: 300\r\nX-Custom: kept\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "ok" {
		t.Errorf("first pipelined: %q", body)
	}
	if _, body := readResp(t, br, "GET"); body != "127.0.0.1|blog-acme.localhost|http||kept" {
		t.Errorf("headers through the fast path: %q", body)
	}
	// The app closes: the client connection stays (the framing is known).
	send("GET /close HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "closing" {
		t.Errorf("close from the app: %q", body)
	}
	send("GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "ok" {
		t.Errorf("after the app closed its side: %q", body)
	}
	// A request the fast path does not take (chunked body) is handed to
	// net/http mid-connection, which serves it and the next ones.
	send("POST /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if _, body := readResp(t, br, "POST"); body != "POST 3 616263" {
		t.Errorf("chunked request body: %q", body)
	}
	send("GET /nothing HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 404 {
		t.Errorf("unknown host after hand-off: %d", resp.StatusCode)
	}
	// Request smuggling shapes are left to net/http, which refuses them.
	c2, br2 := rawConn(t, r)
	io.WriteString(c2, "POST /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
	if resp, _ := readResp(t, br2, "POST"); resp.StatusCode != 400 {
		t.Errorf("two Content-Lengths: %d; want 400", resp.StatusCode)
	}
	c3, br3 := rawConn(t, r)
	io.WriteString(c3, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\nBad Header: x\r\n\r\n")
	if resp, _ := readResp(t, br3, "GET"); resp.StatusCode != 400 {
		t.Errorf("space in a header name: %d; want 400", resp.StatusCode)
	}
	// Client connection close.
	c4, br4 := rawConn(t, r)
	io.WriteString(c4, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\nConnection: close\r\n\r\n")
	if resp, _ := readResp(t, br4, "GET"); !resp.Close {
		t.Error("Connection: close not honoured")
	}
	if _, err := br4.ReadByte(); err != io.EOF {
		t.Errorf("connection still open after Connection: close: %v", err)
	}
	if n := conns.Load(); n > 4 {
		t.Errorf("the app saw %d connections; the pool should reuse them", n)
	}
}

// A pooled connection the gear closed while idle is retried once on a new
// one, so the client sees no error.
func TestFastPathStalePooledConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var served atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Answer one request, then close without saying so.
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				served.Add(1)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				time.Sleep(50 * time.Millisecond)
			}()
		}
	}()
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": ln.Addr().String()})
	c := client(r)
	for i := range 5 {
		if code, body := fetch(t, c, "http://blog-acme.localhost/"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		time.Sleep(100 * time.Millisecond) // the gear has closed the pooled connection
	}
	if served.Load() != 5 {
		t.Errorf("served %d", served.Load())
	}
}

// A response head larger than the fast path's reader (long policies, many
// cookies) goes through whole, on plain HTTP and HTTPS, and the
// connection serves the next request; a head beyond the limit is a 502.
func TestFastPathLargeResponseHead(t *testing.T) {
	policy := strings.TrimSpace(strings.Repeat("default-src 'self'; ", 400)) // 8 KiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/huge":
			w.Header().Set("X-Huge", strings.Repeat("y", 2<<20))
		case "/ws":
			c, brw, _ := http.NewResponseController(w).Hijack()
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Security-Policy: " + policy + "\r\n\r\nafter the head")
			brw.Flush()
			return
		default:
			w.Header().Set("Content-Security-Policy", policy)
			w.Header().Add("Set-Cookie", "a="+strings.Repeat("1", 3000))
			w.Header().Add("Set-Cookie", "b="+strings.Repeat("2", 3000))
		}
		io.WriteString(w, "body after a large head")
	}))
	defer srv.Close()
	r, st, ca := newTLSRouter(t, nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	for scheme, c := range map[string]*http.Client{"http": client(r), "https": tlsClient(r, ca.Roots(), false)} {
		for range 2 { // the connection serves the next request too
			resp, err := c.Get(scheme + "://blog-acme.localhost/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "body after a large head" || resp.Header.Get("Content-Security-Policy") != policy || len(resp.Header.Values("Set-Cookie")) != 2 {
				t.Fatalf("%s: %d %q, policy of %d bytes, %d cookies", scheme, resp.StatusCode, b, len(resp.Header.Get("Content-Security-Policy")), len(resp.Header.Values("Set-Cookie")))
			}
		}
		resp, err := c.Get(scheme + "://blog-acme.localhost/huge")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: a 2 MiB head: %d; want 502", scheme, resp.StatusCode)
		}
	}
	// An upgrade whose 101 is large: the bytes after it are the tunnel's.
	conn, br := rawConn(t, r)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: blog-acme.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Content-Security-Policy") != policy {
		t.Fatalf("large 101: %v %v", resp, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "after the head" {
		t.Errorf("after a large 101: %q", rest)
	}
}

// The gear's read timeout bounds the wait for a response head only. The
// router leaves a connection's deadline in place between responses while
// it still covers the timeout (httpfast.Deadline): a pooled connection
// idle past it must still serve the next request, and a body the gear
// streams for longer than the timeout must come through whole.
func TestFastPathReadTimeoutIsForTheHeadOnly(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			for i := range 4 {
				fmt.Fprintf(w, "part %d,", i)
				w.(http.Flusher).Flush()
				time.Sleep(150 * time.Millisecond)
			}
		case "/slow":
			time.Sleep(600 * time.Millisecond)
		default:
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "ok")
		}
	})
	r, st := newRouter(t)
	app := blog
	app.ReadTimeout = 200 * time.Millisecond
	put(t, st, r, []store.App{app}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	c, br := rawConn(t, r)
	get := func(path string) (int, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n", path)
		resp, body := readResp(t, br, "GET")
		return resp.StatusCode, body
	}
	if code, body := get("/"); code != 200 || body != "ok" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	for i := range 3 {
		time.Sleep(400 * time.Millisecond) // twice the timeout, idle in the pool
		if code, body := get("/"); code != 200 || body != "ok" {
			t.Fatalf("GET / after %d idle waits longer than the read timeout: %d %q", i+1, code, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the app saw %d connections; the test needs the pooled one reused", n)
	}
	if code, body := get("/stream"); code != 200 || body != "part 0,part 1,part 2,part 3," {
		t.Fatalf("a body streamed for 600 ms, read timeout 200 ms: %d %q", code, body)
	}
	if code, body := get("/"); code != 200 || body != "ok" {
		t.Fatalf("GET / after the stream: %d %q", code, body)
	}
	if code, _ := get("/slow"); code != http.StatusGatewayTimeout {
		t.Fatalf("a head later than the read timeout: %d; want 504", code)
	}
}
