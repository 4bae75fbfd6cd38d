package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// inLoops is how many client connections the router's event loops hold.
func inLoops(r *Router) int {
	ls := r.loops.Load()
	if ls == nil {
		return 0
	}
	n := 0
	for _, l := range *ls {
		l.mu.Lock()
		n += l.clients
		l.mu.Unlock()
	}
	return n
}

// loopClient is a client connection to r that has made one request and
// is now held by a loop.
func loopClient(t *testing.T, r *Router) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := rawConn(t, r)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	readResp(t, br, "GET")
	eventually(t, "the connection held by a loop after its first request", func() bool { return inLoops(r) == 1 })
	return c, br
}

// loopApp answers / with ok, /echo with what it was sent, /sized?n=N&i=I
// with N bytes beginning with I, /chunked in two chunks and a trailer,
// /bighead with a head longer than the fast path's reader.
func loopApp(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo":
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %s", r.Method, len(b), b)
	case "/sized":
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		body := []byte(r.URL.Query().Get("i") + ":")
		body = append(body, bytes.Repeat([]byte("x"), max(n-len(body), 0))...)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	case "/chunked":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "part one,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part two")
		w.Header().Set("X-Sum", "17")
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/bighead":
		w.Header().Set("X-Big", strings.Repeat("h", 6000))
		io.WriteString(w, "big head")
	default:
		io.WriteString(w, "ok")
	}
}

// A keep-alive connection moves to an event loop after its first
// request; the loop serves what it can, hands the rest to a goroutine,
// and gets the connection back after.
func TestLoopServesKeepAliveConnections(t *testing.T) {
	srv, conns := countingServer(t, loopApp)
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	c, br := rawConn(t, r)
	send := func(s string) { t.Helper(); io.WriteString(c, s) }
	expect := func(method, want string) *http.Response {
		t.Helper()
		resp, body := readResp(t, br, method)
		if body != want {
			t.Fatalf("%s: body %q; want %q", method, body, want)
		}
		return resp
	}
	send("GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	expect("GET", "ok")
	eventually(t, "the connection held by a loop after its first request", func() bool { return inLoops(r) == 1 })

	for range 50 {
		send("GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
		expect("GET", "ok")
	}
	send("POST /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 5\r\n\r\nhello")
	expect("POST", "POST 5 hello")
	send("HEAD /sized?n=3000 HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if resp := expect("HEAD", ""); resp.ContentLength != 3000 {
		t.Fatalf("HEAD: Content-Length %d; want 3000", resp.ContentLength)
	}
	send("GET /nocontent HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if resp := expect("GET", ""); resp.StatusCode != 204 {
		t.Fatalf("204: %d", resp.StatusCode)
	}
	// Three requests in one write come back in order.
	send("GET /sized?n=10&i=a HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n" +
		"POST /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /sized?n=10&i=b HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	expect("GET", "a:xxxxxxxx")
	expect("POST", "POST 3 abc")
	expect("GET", "b:xxxxxxxx")
	if n := inLoops(r); n != 1 {
		t.Fatalf("%d connections in the loops; want 1", n)
	}

	// Responses longer than the loop's reader or in chunks, and a request
	// body longer than it, are relayed by the loop (it holds the
	// connection right after); a response head longer than the reader is
	// handed to a goroutine, which gives the connection back after.
	for _, tc := range []struct {
		name, req, method, want string
		relayed                 bool
	}{
		{"large", "GET /sized?n=100000&i=big HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n", "GET", "big:" + strings.Repeat("x", 100000-4), true},
		{"chunked", "GET /chunked HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n", "GET", "part one,part two", true},
		{"body", "PUT /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("y", 200000), "PUT", "PUT 200000 " + strings.Repeat("y", 200000), true},
		{"head", "GET /bighead HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n", "GET", "big head", false},
	} {
		send(tc.req)
		resp := expect(tc.method, tc.want)
		if tc.name == "chunked" && (resp.Trailer.Get("X-Sum") != "17" || resp.TransferEncoding == nil) {
			t.Fatalf("chunked: trailer %q, transfer encoding %v; want 17, chunked", resp.Trailer.Get("X-Sum"), resp.TransferEncoding)
		}
		if tc.relayed && inLoops(r) != 1 {
			t.Fatalf("%s: the loop let the connection go; want the response relayed by the loop", tc.name)
		}
		send("GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
		expect("GET", "ok")
		eventually(t, "the connection back in a loop after the "+tc.name+" response", func() bool { return inLoops(r) == 1 })
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("the app saw %d connections; the loops and the goroutines should share them", n)
	}
	// Another host on the same connection: net/http's 404.
	send("GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 404 {
		t.Fatalf("unknown host from a loop: %d; want 404", resp.StatusCode)
	}
}

// A client that sends many requests and does not read: what the loop
// cannot write at once is written by a goroutine, and every response
// comes, whole and in order.
func TestLoopClientNotReading(t *testing.T) {
	srv, _ := countingServer(t, loopApp)
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	c, br := loopClient(t, r)
	const n = 2000 // 6 MB of responses: more than the sockets' buffers
	go func() {
		var b bytes.Buffer
		for i := range n {
			fmt.Fprintf(&b, "GET /sized?n=3000&i=%d HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n", i)
		}
		c.Write(b.Bytes())
	}()
	time.Sleep(200 * time.Millisecond) // the buffers fill before anything is read
	for i := range n {
		resp, body := readResp(t, br, "GET")
		if want := fmt.Sprintf("%d:", i); resp.StatusCode != 200 || len(body) != 3000 || !strings.HasPrefix(body, want) {
			t.Fatalf("response %d: %d, %d bytes beginning %q; want 200, 3000 bytes beginning %q", i, resp.StatusCode, len(body), body[:min(len(body), 8)], want)
		}
	}
	// One long response, read slowly: the loop relays it as the client
	// takes it, and serves the next request after.
	io.WriteString(c, "GET /sized?n=8000000&i=long HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	time.Sleep(200 * time.Millisecond)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for chunk := make([]byte, 64<<10); ; {
		n, err := resp.Body.Read(chunk)
		got.Write(chunk[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes of the long response: %v", got.Len(), err)
		}
		if got.Len() < 1<<20 {
			time.Sleep(time.Millisecond)
		}
	}
	if want := "long:" + strings.Repeat("x", 8000000-5); got.String() != want {
		t.Fatalf("long response: %d bytes; want %d", got.Len(), len(want))
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "ok" {
		t.Fatalf("after the long response: %q", body)
	}
	if n := inLoops(r); n != 1 {
		t.Fatalf("%d connections in the loops after the long response; want 1 (relayed, not handed off)", n)
	}
}

// An idle connection in a loop is closed after the idle timeout; a head
// begun there and not finished, after the header timeout.
func TestLoopTimeouts(t *testing.T) {
	srv, _ := countingServer(t, loopApp)
	r, st := newRouterWith(t, func(o *Options) {
		o.IdleTimeout = 300 * time.Millisecond
		o.HeaderTimeout = 300 * time.Millisecond
	})
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	for _, tail := range []string{"", "GET / HTTP/1.1\r\nHost: blog"} {
		c, br := rawConn(t, r)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
		readResp(t, br, "GET")
		start := time.Now() // the idle wait began before; the head's, after
		eventually(t, "the connection in a loop", func() bool { return inLoops(r) == 1 })
		if tail != "" {
			start = time.Now()
			io.WriteString(c, tail)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("tail %q: read %v; want the router to close the connection", tail, err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("tail %q: closed after %v, before its timeout", tail, d)
		}
		eventually(t, "the loop forgets the closed connection", func() bool { return inLoops(r) == 0 })
	}
}

// When the router stops, a loop closes its idle connections at once and
// a connection with a request in flight after its response.
func TestLoopShutdown(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "ok")
	})
	st, err := store.Open(t.TempDir() + "/s.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := New(Options{Listen: "127.0.0.1:0", DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow(ctx, t, st, r)
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})

	idle, idleBR := rawConn(t, r)
	busy, busyBR := rawConn(t, r)
	for _, c := range []net.Conn{idle, busy} {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	}
	readResp(t, idleBR, "GET")
	readResp(t, busyBR, "GET")
	eventually(t, "both connections in a loop", func() bool { return inLoops(r) == 2 })
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	<-arrived
	cancel()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v; want it closed", err)
	}
	select {
	case <-done:
		t.Fatal("the router stopped with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	resp, body := readResp(t, busyBR, "GET")
	if body != "ok" || !resp.Close {
		t.Fatalf("request in flight: %q, close %v; want ok and Connection: close", body, resp.Close)
	}
	if _, err := busyBR.ReadByte(); err != io.EOF {
		t.Fatalf("after its response: %v; want the connection closed", err)
	}
	<-done
}

// A pooled connection whose gear takes the next request and closes
// without a byte of answer (it was closing as the request came): the
// request, which has no body, is tried again on a new connection, and
// the client sees the answer.
func TestLoopRetriesWhenAPooledConnectionCloses(t *testing.T) {
	gear, accepted := oneAnswerGear(t)
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": gear})
	c, br := rawConn(t, r)
	for i := range 6 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q; want 200 ok", i, resp.StatusCode, body)
		}
		if i == 0 {
			eventually(t, "the connection in a loop", func() bool { return inLoops(r) == 1 })
		}
	}
	if n := accepted.Load(); n < 4 {
		t.Fatalf("the app accepted %d connections; the test needs its closes to be met", n)
	}
}

// oneAnswerGear is a gear that answers the first request on each
// connection, and closes it on the second before answering. It returns
// its address and how many connections it accepted.
func oneAnswerGear(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					if _, err := http.ReadRequest(br); err != nil || i == 1 {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return ln.Addr().String(), &accepted
}

// openFDs is how many descriptors this process has open.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("/proc/self/fd cannot be read on this host (no /proc mounted), so the process's open descriptors cannot be counted")
	}
	return len(ents)
}

// Connections moved into the loops, handed to goroutines and back, ended
// by either side, leave no descriptor behind.
func TestLoopLeavesNoDescriptors(t *testing.T) {
	srv, _ := countingServer(t, loopApp)
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	// Warm up what the runtime opens once (the loops' epoll, pools).
	c, br := rawConn(t, r)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	readResp(t, br, "GET")
	c.Close()
	eventually(t, "the warm-up connection closed", func() bool { return inLoops(r) == 0 })
	before := openFDs(t)

	for i := range 40 {
		c, br := rawConn(t, r)
		for range 3 {
			io.WriteString(c, "GET /sized?n=20000 HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
			readResp(t, br, "GET")
			io.WriteString(c, "PUT /echo HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 8000\r\n\r\n"+strings.Repeat("b", 8000))
			readResp(t, br, "PUT")
			// A long response head: handed to a goroutine and back.
			io.WriteString(c, "GET /bighead HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
			readResp(t, br, "GET")
			io.WriteString(c, "GET /chunked HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
			readResp(t, br, "GET")
		}
		if i%2 == 0 {
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\nConnection: close\r\n\r\n")
			readResp(t, br, "GET")
		}
		c.Close()
	}
	eventually(t, "every client connection closed", func() bool { return inLoops(r) == 0 })
	srv.CloseClientConnections() // the router's pooled connections end too
	eventually(t, "descriptors back to where they were", func() bool { return openFDs(t) <= before })
}

// A request body the loop cannot send at once: an app that reads it
// slowly (the gear's socket fills: EPOLLOUT resumes), a client that
// sends it in pieces (its next bytes resume), a client that goes away in
// the middle (both connections end, the loop holds nothing).
func TestLoopRelaysRequestBodies(t *testing.T) {
	var cut atomic.Int64
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, buf := 0, make([]byte, 16<<10)
		for {
			m, err := r.Body.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				cut.Add(1)
				return
			}
			if r.URL.Path == "/slow" {
				time.Sleep(time.Millisecond)
			}
		}
		fmt.Fprintf(w, "%d", n)
	})
	r, st := newRouter(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	c, br := loopClient(t, r)

	const big = 4 << 20
	go func() {
		fmt.Fprintf(c, "POST /slow HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: %d\r\n\r\n", big)
		c.Write(bytes.Repeat([]byte("s"), big))
	}()
	if _, body := readResp(t, br, "POST"); body != fmt.Sprint(big) {
		t.Fatalf("a body read slowly by the app: %q; want %d", body, big)
	}
	io.WriteString(c, "POST /pieces HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 30000\r\n\r\n")
	for range 3 {
		c.Write(bytes.Repeat([]byte("p"), 10000))
		time.Sleep(50 * time.Millisecond)
	}
	if _, body := readResp(t, br, "POST"); body != "30000" {
		t.Fatalf("a body sent in pieces: %q; want 30000", body)
	}
	if n := inLoops(r); n != 1 {
		t.Fatalf("%d connections in the loops; want 1 (the bodies relayed, not handed off)", n)
	}
	io.WriteString(c, "POST /gone HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 30000\r\n\r\n")
	c.Write(bytes.Repeat([]byte("g"), 10000))
	time.Sleep(50 * time.Millisecond)
	c.Close()
	eventually(t, "the app sees the body cut", func() bool { return cut.Load() == 1 })
	eventually(t, "the loop lets the connection go", func() bool { return inLoops(r) == 0 })
	c2, br2 := rawConn(t, r)
	io.WriteString(c2, "POST /after HTTP/1.1\r\nHost: blog-acme.localhost\r\nContent-Length: 5\r\n\r\nhello")
	if _, body := readResp(t, br2, "POST"); body != "5" {
		t.Fatalf("after a client went away mid-body: %q", body)
	}
}

// A client that sends its last request and closes its side at once gets
// its response, and the loop closes the connection then, not after the
// idle timeout (the end came with the request's bytes).
func TestLoopClientClosingAfterItsRequest(t *testing.T) {
	srv, _ := countingServer(t, loopApp)
	r, st := newRouterWith(t, func(o *Options) { o.IdleTimeout = time.Hour })
	put(t, st, r, []store.App{blog}, map[string]string{"g1": strings.TrimPrefix(srv.URL, "http://")})
	c, br := loopClient(t, r)
	io.WriteString(c, "GET /sized?n=10&i=z HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	if _, body := readResp(t, br, "GET"); body != "z:xxxxxxxx" {
		t.Fatalf("response after the client closed its side: %q", body)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the response: %v; want the router to close the connection", err)
	}
	eventually(t, "the loop lets the connection go", func() bool { return inLoops(r) == 0 })
}
