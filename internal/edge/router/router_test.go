package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func newRouter(t *testing.T) (*Router, *store.Store) {
	return newRouterWith(t, nil)
}

// newRouterWith starts a router on fresh ports; opt adjusts its options.
func newRouterWith(t *testing.T, opt func(*Options)) (*Router, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	o := Options{Listen: "127.0.0.1:0"}
	if opt != nil {
		opt(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	follow(ctx, t, st, r)
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, st
}

// backend is a test gear: it answers with its name, and /slow waits for
// release.
func backend(t *testing.T, name string, release chan struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
		case "/ws":
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(r.Context())
				if err != nil {
					return
				}
				c.Write(r.Context(), typ, append([]byte(name+":"), msg...))
			}
		case "/hdr":
			fmt.Fprintf(w, "%s|%s|%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"))
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func put(t *testing.T, st *store.Store, r *Router, apps []store.App, gears map[string]string) {
	t.Helper()
	err := st.Update(func(tx *store.Tx) error {
		old, _ := store.List[store.Gear](tx, "gears/")
		for _, g := range old {
			tx.Delete(store.GearKey(g.ID))
		}
		for i := range apps {
			tx.Put(apps[i].Key(), &apps[i])
		}
		for id, ep := range gears {
			host, port, _ := net.SplitHostPort(ep)
			var p int
			fmt.Sscan(port, &p)
			tx.Put(store.GearKey(id), &store.Gear{ID: id, AppKey: "apps/acme/blog", IP: host, Port: p, State: store.GearRunning})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.WaitApplied(ctx, st.Rev()); err != nil {
		t.Fatal(err)
	}
}

func client(r *Router) *http.Client {
	addr := r.Addr().String()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}}
}

func fetch(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var blog = store.App{Name: "blog", Domain: "acme", Host: "blog-acme.localhost"}

func TestRoutingPagesAndHeaders(t *testing.T) {
	r, st := newRouter(t)
	c := client(r)
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog, {Name: "off", Domain: "acme", Host: "off-acme.localhost", Stopped: true}}, map[string]string{"g1": a})

	if code, body := fetch(t, c, "http://blog-acme.localhost/"); code != 200 || body != "a" {
		t.Errorf("routed: %d %q", code, body)
	}
	if code, body := fetch(t, c, "http://BLOG-ACME.localhost./"); code != 200 || body != "a" {
		t.Errorf("case and trailing dot: %d %q", code, body)
	}
	if code, body := fetch(t, c, "http://nope.localhost/"); code != 404 || !strings.Contains(body, "No app") {
		t.Errorf("unknown host: %d %q", code, body)
	}
	if code, body := fetch(t, c, "http://off-acme.localhost/"); code != 503 || !strings.Contains(body, "stopped") {
		t.Errorf("stopped app: %d %q", code, body)
	}
	req, _ := http.NewRequest("GET", "http://blog-acme.localhost/hdr", nil)
	req.Header.Set("X-Forwarded-For", "1.2.3.4")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "127.0.0.1|blog-acme.localhost|http" {
		t.Errorf("forwarded headers (client values must be replaced): %q", b)
	}

	// A gear that is gone: a clear 502, not a hang.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	put(t, st, r, []store.App{blog}, map[string]string{"g9": deadAddr})
	if code, body := fetch(t, c, "http://blog-acme.localhost/"); code != 502 || !strings.Contains(body, "did not answer") {
		t.Errorf("dead gear: %d %q", code, body)
	}
}

func TestLeastConnections(t *testing.T) {
	r, st := newRouter(t)
	c := client(r)
	release := make(chan struct{})
	a, b := backend(t, "a", release), backend(t, "b", release)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a, "g2": b})
	// Hold two slow requests: they must land on different gears.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); fetch(t, c, "http://blog-acme.localhost/slow") }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.ActiveConns(a)+r.ActiveConns(b) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.ActiveConns(a) != 1 || r.ActiveConns(b) != 1 {
		t.Errorf("open requests: a=%d b=%d; want 1 and 1", r.ActiveConns(a), r.ActiveConns(b))
	}
	close(release)
	wg.Wait()
	// A request is counted out just after its last byte went out.
	for end := time.Now().Add(5 * time.Second); r.ActiveConns(a)+r.ActiveConns(b) != 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if r.ActiveConns(a)+r.ActiveConns(b) != 0 {
		t.Errorf("counters did not return to zero")
	}
}

// A route change keeps open requests and WebSockets on the old gear, and
// sends new ones to the new gear.
func TestRouteChangeKeepsOpenConnections(t *testing.T) {
	r, st := newRouter(t)
	c := client(r)
	release := make(chan struct{})
	a, b := backend(t, "a", release), backend(t, "b", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://blog-acme.localhost/ws", &websocket.DialOptions{HTTPClient: c})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	slow := make(chan string)
	go func() { _, body := fetch(t, c, "http://blog-acme.localhost/slow"); slow <- body }()
	for end := time.Now().Add(10 * time.Second); r.ActiveConns(a) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the websocket and the slow request are not both open on gear a: %d", r.ActiveConns(a))
		}
	}

	put(t, st, r, []store.App{blog}, map[string]string{"g2": b})
	if _, body := fetch(t, c, "http://blog-acme.localhost/"); body != "b" {
		t.Errorf("new request went to %q; want b", body)
	}
	ws.Write(ctx, websocket.MessageText, []byte("hi"))
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "a:hi" {
		t.Errorf("websocket after route change: %q %v; want a:hi", msg, err)
	}
	close(release)
	if body := <-slow; body != "a" {
		t.Errorf("in-flight request: %q; want a", body)
	}
	// The router counts the request out just after its last byte went
	// to the client.
	for end := time.Now().Add(5 * time.Second); r.ActiveConns(a) > 1 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.ActiveConns(a); n != 1 {
		t.Errorf("old gear open connections: %d; want 1 (the websocket)", n)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for r.ActiveConns(a) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.ActiveConns(a); n != 0 {
		t.Errorf("old gear still has %d connections after the websocket closed", n)
	}
}

func TestPlatformHost(t *testing.T) {
	st, _ := store.Open(filepath.Join(t.TempDir(), "s.db"))
	defer st.Close()
	r, err := New(Options{Listen: "127.0.0.1:0", PlatformHosts: []string{"localhost"},
		Platform: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "api") })})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if _, body := fetch(t, client(r), "http://localhost:8080/v1/info"); body != "api" {
		t.Errorf("platform host: %q", body)
	}
}
