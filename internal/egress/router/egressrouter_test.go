package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gantry-paas/gantry/internal/egress/policy"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// syncBuf is an access log the test can read while the router writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T, o Options) (*Router, *prometheus.Registry, *syncBuf) {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := &syncBuf{}
	o.Addr, o.Registerer, o.AccessLog = loopback, reg, log
	if o.Redirects == 0 {
		o.Redirects = 2
	}
	r := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r, reg, log
}

func acl(t *testing.T, entries ...string) policy.ACL {
	t.Helper()
	var a policy.ACL
	for _, s := range entries {
		e, err := policy.ParseACL(s)
		if err != nil {
			t.Fatal(err)
		}
		a = append(a, e)
	}
	return a
}

// echo listens on loopback and answers each connection with "NAME:" and
// what it read, once the client half-closes.
func echo(t *testing.T, name string) (string, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "%s:%s", name, b)
			}()
		}
	}()
	return ln.Addr().String(), ln
}

// roundTrip sends msg over c, half-closes and reads the answer.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func proxyClient(r *Router) *http.Client {
	u, _ := url.Parse("http://" + r.ProxyAddr().String())
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 10 * time.Second}
}

func TestHTTPProxyACL(t *testing.T) {
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "host=%s path=%s body=%s proxyconn=%q", r.Host, r.URL.RequestURI(), body, r.Header.Get("Proxy-Connection"))
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	r, reg, log := start(t, Options{})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true,
		ACL: acl(t, "localhost", "127.0.0.0/8", fmt.Sprintf("!127.0.0.1:%d", port+1))}})
	c := proxyClient(r)

	resp, err := c.Post(fmt.Sprintf("http://localhost:%d/a?b=c", port), "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("host=localhost:%d path=/a?b=c body=payload proxyconn=\"\"", port); resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("through the proxy: %d %q, want %q", resp.StatusCode, b, want)
	}

	// Not in the ACL: refused with the reason, nothing dialled.
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true, ACL: acl(t, "api.example.com", "!localhost")}})
	resp, err = c.Get(fmt.Sprintf("http://localhost:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Gantry-Egress") != "denied" || !strings.Contains(string(b), "ACL entry 2: !localhost") {
		t.Fatalf("denied request: %d %q", resp.StatusCode, b)
	}
	resp, err = c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "no ACL entry allows it") {
		t.Fatalf("request to an address no entry covers: %d %q", resp.StatusCode, b)
	}

	// A request that is not a proxy request.
	resp, err = http.Get("http://" + r.ProxyAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("origin-form request: %d", resp.StatusCode)
	}

	// An address that is no gear of the app.
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{netip.MustParseAddr("10.9.9.9")}, Proxy: true, ACL: acl(t, "all")}})
	resp, err = c.Get(fmt.Sprintf("http://localhost:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("unknown source: %d", resp.StatusCode)
	}

	time.Sleep(1100 * time.Millisecond) // the access log is flushed each second
	logs := log.String()
	for _, want := range []string{"app=acme/web mode=proxy gear=127.0.0.1 method=POST dest=\"localhost:" + fmt.Sprint(port) + "\" result=ok status=200 bytes_out=7",
		"result=denied status=403", "error=\"ACL entry 2: !localhost\""} {
		if !strings.Contains(logs, want) {
			t.Errorf("access log lacks %q:\n%s", want, logs)
		}
	}
	if n := testutil.ToFloat64(r.obs.conns.WithLabelValues("acme/web", "proxy", "localhost:"+fmt.Sprint(port), "denied")); n != 1 {
		t.Errorf("denials counted %v, want 1", n)
	}
	if n, _ := testutil.GatherAndCount(reg, "gantry_egress_router_bytes_total"); n == 0 {
		t.Error("no byte counters")
	}
}

func TestConnect(t *testing.T) {
	target, _ := echo(t, "srv")
	r, _, _ := start(t, Options{})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true, ACL: acl(t, "127.0.0.1", "!localhost")}})

	connect := func(dest string) (net.Conn, *bufio.Reader, *http.Response) {
		c, err := net.Dial("tcp", r.ProxyAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return c, br, resp
	}
	c, br, resp := connect(target)
	if code := resp.StatusCode; code != 200 {
		t.Fatalf("CONNECT %s: %d", target, code)
	}
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite() // half-closed: the answer still comes
	b, _ := io.ReadAll(br)
	c.Close()
	if string(b) != "srv:hello" {
		t.Fatalf("through CONNECT: %q", b)
	}
	_, port, _ := net.SplitHostPort(target)
	c, _, resp = connect("localhost:" + port)
	c.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("CONNECT to a denied name: %d", resp.StatusCode)
	}

	// The platform's networks are never dialled, whatever the ACL.
	f, _, _ := start(t, Options{Forbidden: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	f.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true, ACL: acl(t, "all")}})
	r = f
	c, _, resp = connect(target)
	b, _ = io.ReadAll(resp.Body)
	c.Close()
	if code := resp.StatusCode; code != 502 || !strings.Contains(string(b), "platform's own networks") {
		t.Fatalf("CONNECT to a forbidden network: %d %q", code, b)
	}
}

func TestRedirect(t *testing.T) {
	target, _ := echo(t, "smtp")
	r, reg, _ := start(t, Options{})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Redirects: []Redirect{{Match: "*:25", Target: target}}}})
	ports := r.RedirectPorts()
	if len(ports) != 2 {
		t.Fatalf("redirect ports %v", ports)
	}
	c, err := net.Dial("tcp", netip.AddrPortFrom(loopback, ports[0]).String())
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "EHLO"); got != "smtp:EHLO" {
		t.Fatalf("redirected: %q", got)
	}
	// The second port has no redirect for this app: closed at once.
	c, err = net.Dial("tcp", netip.AddrPortFrom(loopback, ports[1]).String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, _ := io.ReadAll(c); len(got) != 0 { // closed (or reset) at once
		t.Fatalf("unconfigured redirect port answered %q", got)
	}
	c.Close()
	// A connection is recorded just after its last byte went out.
	n := 0
	for end := time.Now().Add(5 * time.Second); n != 2 && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		n, _ = testutil.GatherAndCount(reg, "gantry_egress_router_connections_total")
	}
	if n != 2 {
		t.Fatalf("connection series %d, want 2 (ok and denied)", n)
	}
}

func TestTCPProxyRoundRobinAndHealth(t *testing.T) {
	a, lnA := echo(t, "a")
	b, _ := echo(t, "b")
	port := freePort(t)
	r, _, _ := start(t, Options{HealthInterval: 100 * time.Millisecond})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, TCP: []TCPProxy{{Port: port, Targets: []string{a, b}}}}})
	dial := func() string {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		return roundTrip(t, c, "x")
	}
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		seen[dial()]++
	}
	if seen["a:x"] != 5 || seen["b:x"] != 5 {
		t.Fatalf("round-robin: %v", seen)
	}
	lnA.Close()
	for i := 0; i < 10; i++ {
		if got := dial(); got != "b:x" {
			t.Fatalf("after a target died, connection %d got %q", i, got)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Healthy(a) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if r.Healthy(a) || !r.Healthy(b) {
		t.Fatalf("health: a %v b %v", r.Healthy(a), r.Healthy(b))
	}
	// Removed from the configuration: the port closes.
	r.Apply(nil)
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Fatal("TCP proxy port still open after its removal")
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestHTTPProxyFastPath: requests on one client connection, in raw
// HTTP/1.1, as the fast path sees them: keep-alive with bodies, framing
// by length and by chunks, the authority as Host, Proxy-* and X-Forwarded-*
// headers not passed on, then a denied request and a CONNECT on the same
// connection (handed to net/http at the request boundary), and pooled
// destination connections.
func TestHTTPProxyFastPath(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]bool{}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr] = true
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/chunked" {
			w.Write([]byte("part1,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
			return
		}
		fmt.Fprintf(w, "host=%s uri=%s body=%s pa=%q xff=%q", r.Host, r.URL.RequestURI(), body, r.Header.Get("Proxy-Authorization"), r.Header.Get("X-Forwarded-For"))
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })
	dest := ln.Addr().String()
	gate, _ := echo(t, "gate")
	_, gatePort, _ := net.SplitHostPort(gate)

	r, reg, _ := start(t, Options{})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true, ACL: acl(t, "127.0.0.1", "!127.0.0.1:1")}})
	c, err := net.Dial("tcp", r.ProxyAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	read := func(method string) (*http.Response, string) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for i := range 3 {
		fmt.Fprintf(c, "POST http://%s/p%d?q=1 HTTP/1.1\r\nHost: wrong.example\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 5\r\n\r\nhello", dest, i)
		resp, body := read("POST")
		want := fmt.Sprintf(`host=%s uri=/p%d?q=1 body=hello pa="" xff=""`, dest, i)
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q; want %q", i, resp.StatusCode, body, want)
		}
	}
	fmt.Fprintf(c, "GET http://%s/chunked HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
	if resp, body := read("GET"); body != "part1,part2" || len(resp.TransferEncoding) == 0 {
		t.Fatalf("chunked: %q %v", body, resp.TransferEncoding)
	}
	fmt.Fprintf(c, "HEAD http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
	if resp, body := read("HEAD"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	// Denied (handed to net/http, which explains), then CONNECT.
	fmt.Fprintf(c, "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
	if resp, body := read("GET"); resp.StatusCode != 403 || !strings.Contains(body, "ACL entry 2") {
		t.Fatalf("denied: %d %q", resp.StatusCode, body)
	}
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n", gatePort, gatePort)
	if resp, _ := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); resp == nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT after fast requests: %v", resp)
	}
	io.WriteString(c, "tunnelled")
	c.(*net.TCPConn).CloseWrite()
	if b, _ := io.ReadAll(br); string(b) != "gate:tunnelled" {
		t.Fatalf("tunnel: %q", b)
	}
	mu.Lock()
	n := len(remotes)
	mu.Unlock()
	if n != 1 {
		t.Errorf("the destination saw %d connections for 5 keep-alive requests; want 1 (pooled)", n)
	}
	if got := testutil.ToFloat64(r.obs.conns.WithLabelValues("acme/web", "proxy", dest, "ok")); got != 5 {
		t.Errorf("ok requests counted: %v; want 5", got)
	}
	_ = reg

	// A destination that is down: 502 from the fast path, counted failed.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	c2, _ := net.Dial("tcp", r.ProxyAddr().String())
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c2, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", deadAddr, deadAddr)
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != 502 {
		t.Fatalf("dead destination: %v %v", resp, err)
	}
	if got := testutil.ToFloat64(r.obs.conns.WithLabelValues("acme/web", "proxy", deadAddr, "failed")); got != 1 {
		t.Errorf("failed requests counted: %v", got)
	}
}

func TestSplitAuthority(t *testing.T) {
	for in, want := range map[string]string{"Example.COM": "example.com 80", "example.com:8080": "example.com 8080", "[2001:DB8::1]:443": "2001:db8::1 443", "[::1]": "::1 80"} {
		h, p, ok := splitAuthority([]byte(in))
		if got := fmt.Sprint(h, " ", p); !ok || got != want {
			t.Errorf("splitAuthority(%q) = %s %v; want %s", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", ":80", "host:0", "host:99999", "host:x", "[zz]:1"} {
		if _, _, ok := splitAuthority([]byte(bad)); ok {
			t.Errorf("splitAuthority(%q) accepted", bad)
		}
	}
}

// TestPerGearConnectionCap: one gear cannot hold more than its cap of
// connections through the router (all ports together); the rest are reset
// and counted, and a closed connection frees its slot.
func TestPerGearConnectionCap(t *testing.T) {
	target, _ := echo(t, "db")
	r, reg, _ := start(t, Options{MaxConnsPerGear: 3})
	r.Apply([]App{{Name: "acme/web", Gears: []netip.Addr{loopback}, Proxy: true, ACL: acl(t, "all"),
		Redirects: []Redirect{{Match: "*:5432", Target: target}}}})
	redirect := netip.AddrPortFrom(loopback, r.RedirectPorts()[0]).String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, addr := range []string{redirect, redirect, r.ProxyAddr().String()} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The two listeners accept in goroutines of their own: the proxy's
	// may not yet have counted its connection when the redirect's takes
	// the next ones.
	for r.guard.Open(loopback) < 3 {
		time.Sleep(time.Millisecond)
	}
	refused := func() float64 {
		return testutil.ToFloat64(r.obs.refused.WithLabelValues(redirect, "per-source"))
	}
	for i := 0; i < 4; i++ {
		if c, err := net.Dial("tcp", redirect); err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if got, _ := io.ReadAll(c); len(got) != 0 {
				t.Fatalf("a connection over the cap got %q", got)
			}
			c.Close()
		}
	}
	for end := time.Now().Add(10 * time.Second); refused() < 4 && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
	}
	if refused() != 4 {
		t.Fatalf("refused %v; want 4", refused())
	}
	if n, _ := testutil.GatherAndCount(reg, "gantry_egress_router_connections_refused_total"); n != 1 {
		t.Fatalf("refused series %d; want 1", n)
	}
	// One of the held connections ends: the gear gets a slot again.
	if got := roundTrip(t, held[0], "SELECT 1"); got != "db:SELECT 1" {
		t.Fatalf("held redirect: %q", got)
	}
	held[0].Close()
	var got string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", redirect)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("again"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c) // reset while the slot is not yet free
		c.Close()
		if got = string(b); got == "db:again" {
			return
		}
	}
	t.Fatalf("after a slot was freed: %q; want db:again", got)
}
