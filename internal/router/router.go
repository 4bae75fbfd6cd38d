// Package router is Gantry's HTTP front door: it routes each request by its
// Host to the app's gears, balancing by least connections, and proxies
// WebSockets on the same port. It follows the store: every committed write
// recompiles the route table, which is swapped atomically, so route
// changes never drop open connections.
//
// Concurrency: the request path reads the current table through an atomic
// pointer and takes no locks; per-endpoint connection counters are atomics
// shared across tables. The router does not decide what runs: it only
// reads apps and gears.
package router

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/store"
)

// Options configure a Router.
type Options struct {
	Store *store.Store
	Log   *slog.Logger
	// Listen is the HTTP address, e.g. ":80" or "127.0.0.1:0".
	Listen string
	// PlatformHosts are served by Platform (the API, git over HTTP) instead
	// of an app.
	PlatformHosts []string
	Platform      http.Handler
	// DialTimeout bounds connecting to a gear.
	DialTimeout time.Duration
	// Waker wakes an idle app; requests to it are held meanwhile, up to
	// WakeTimeout (default 30s), then answered 503.
	Waker       Waker
	WakeTimeout time.Duration
}

// Waker wakes idle apps (the autoscaler). Wake must not block.
type Waker interface {
	Wake(appKey string)
}

// Router serves HTTP for apps.
type Router struct {
	o     Options
	log   *slog.Logger
	ln    net.Listener
	table atomic.Pointer[Table]
	proxy *httputil.ReverseProxy

	connsMu sync.Mutex
	conns   map[string]*atomic.Int64 // endpoint -> open requests

	appliedMu sync.Mutex
	applied   chan struct{} // closed and replaced on every apply

	rr       atomic.Uint64
	logLimit rateLimit

	statsMu  sync.Mutex
	stats    map[string]*appStats // app key -> live concurrency
	platform map[string]bool
}

type ctxKey struct{}

// New validates the options and binds the listener.
func New(o Options) (*Router, error) {
	if o.Store == nil || o.Listen == "" {
		return nil, errors.New("router: Store and Listen are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.WakeTimeout == 0 {
		o.WakeTimeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("router: listening on %s: %w (another server running? choose another address with --http)", o.Listen, err)
	}
	r := &Router{o: o, log: o.Log.With("component", "router"), ln: ln,
		conns: map[string]*atomic.Int64{}, applied: make(chan struct{}), platform: map[string]bool{}, stats: map[string]*appStats{}}
	for _, h := range o.PlatformHosts {
		r.platform[strings.ToLower(h)] = true
	}
	r.table.Store(&Table{Routes: map[string]*Route{}})
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		// Below Node.js's 5 s keep-alive: a pooled connection is never
		// reused just as the app closes it.
		IdleConnTimeout:   4 * time.Second,
		ForceAttemptHTTP2: false,
	}
	r.proxy = &httputil.ReverseProxy{
		Rewrite:       r.rewrite,
		Transport:     transport,
		FlushInterval: -1, // stream: server-sent events and long polls work
		ErrorHandler:  r.proxyError,
		ErrorLog:      slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	return r, nil
}

// Addr is the bound HTTP address.
func (r *Router) Addr() net.Addr { return r.ln.Addr() }

// Run serves until ctx ends, following the store's changes.
func (r *Router) Run(ctx context.Context) error {
	watch := r.o.Store.Watch(ctx)
	if err := r.reload(); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(r.ln) }()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(sctx)
			cancel()
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("router: %w", err)
		case <-watch:
			if err := r.reload(); err != nil {
				r.log.Error("reloading routes", "err", err)
			}
		}
	}
}

func (r *Router) reload() error {
	var apps []store.App
	var gears []store.Gear
	var rev int64
	err := r.o.Store.View(func(tx *store.Tx) error {
		rev = r.o.Store.Rev()
		var err error
		if apps, err = store.List[store.App](tx, "apps/"); err != nil {
			return err
		}
		gears, err = store.List[store.Gear](tx, "gears/")
		return err
	})
	if err != nil {
		return err
	}
	r.Apply(Compile(rev, apps, gears))
	return nil
}

// Apply swaps in a new route table.
func (r *Router) Apply(t *Table) {
	r.connsMu.Lock()
	for _, rt := range t.Routes {
		for _, ep := range rt.Endpoints {
			if r.conns[ep] == nil {
				r.conns[ep] = new(atomic.Int64)
			}
		}
	}
	r.connsMu.Unlock()
	r.table.Store(t)
	r.appliedMu.Lock()
	close(r.applied)
	r.applied = make(chan struct{})
	r.appliedMu.Unlock()
}

// WaitApplied returns once a table of revision rev or later is in force.
func (r *Router) WaitApplied(ctx context.Context, rev int64) error {
	for {
		r.appliedMu.Lock()
		ch := r.applied
		r.appliedMu.Unlock()
		if r.table.Load().Rev >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// ActiveConns is the number of requests (WebSockets included) open to an
// endpoint.
func (r *Router) ActiveConns(endpoint string) int {
	r.connsMu.Lock()
	c := r.conns[endpoint]
	r.connsMu.Unlock()
	if c == nil {
		return 0
	}
	return int(c.Load())
}

func (r *Router) counter(ep string) *atomic.Int64 {
	r.connsMu.Lock()
	defer r.connsMu.Unlock()
	c := r.conns[ep]
	if c == nil {
		c = new(atomic.Int64)
		r.conns[ep] = c
	}
	return c
}

// pick chooses the endpoint with the fewest open requests and counts the
// request on it. If the table changed meanwhile and the endpoint left it,
// it picks again, so that a drained gear never gets a request after the
// agent saw its count reach zero.
func (r *Router) pick(host string) (rt *Route, ep string, c *atomic.Int64) {
	for {
		t := r.table.Load()
		rt = t.Routes[host]
		if rt == nil || len(rt.Endpoints) == 0 {
			return rt, "", nil
		}
		best, bestN := "", int64(-1)
		start := int(r.rr.Add(1))
		for i := range rt.Endpoints {
			e := rt.Endpoints[(start+i)%len(rt.Endpoints)]
			n := r.counter(e).Load()
			if bestN < 0 || n < bestN {
				best, bestN = e, n
			}
		}
		c = r.counter(best)
		c.Add(1)
		if r.table.Load() == t || stillRouted(r.table.Load(), host, best) {
			return rt, best, c
		}
		c.Add(-1)
	}
}

func stillRouted(t *Table, host, ep string) bool {
	rt := t.Routes[host]
	if rt == nil {
		return false
	}
	for _, e := range rt.Endpoints {
		if e == ep {
			return true
		}
	}
	return false
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// ServeHTTP routes one request.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	host := hostOnly(req.Host)
	if r.platform[host] && r.o.Platform != nil {
		r.o.Platform.ServeHTTP(w, req)
		return
	}
	rt, ep, c := r.pick(host)
	if rt != nil {
		st := r.appStats(rt.AppKey)
		st.begin()
		defer st.end()
		if ep == "" && rt.Idle && r.o.Waker != nil {
			rt, ep, c = r.holdForWake(req.Context(), host, rt)
			if ep == "" && req.Context().Err() == nil {
				page(w, req, http.StatusServiceUnavailable, "App did not wake", fmt.Sprintf("The app at %s was idle and did not start within %s. Its owner can look at `gantry app events %s` and `gantry logs %s`.", host, r.o.WakeTimeout, rt.App, rt.App))
				return
			}
		}
	}
	switch {
	case rt == nil:
		page(w, req, http.StatusNotFound, "No app here", fmt.Sprintf("No app is served at %s. Check the address, or create the app with `gantry app create`.", host))
		return
	case ep == "" && rt.Stopped:
		page(w, req, http.StatusServiceUnavailable, "App stopped", fmt.Sprintf("The app at %s is stopped. Its owner can start it with `gantry app start %s`.", host, rt.App))
		return
	case ep == "":
		page(w, req, http.StatusServiceUnavailable, "App not running", fmt.Sprintf("The app at %s has no running gears yet. Push code to deploy it, or check `gantry app show %s`.", host, rt.App))
		return
	}
	defer c.Add(-1)
	r.proxy.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), ctxKey{}, ep)))
}

// holdForWake asks the waker to wake the app and waits until the route has
// a gear (or the wake timeout, or the client leaves).
func (r *Router) holdForWake(ctx context.Context, host string, rt *Route) (*Route, string, *atomic.Int64) {
	r.o.Waker.Wake(rt.AppKey)
	deadline := time.NewTimer(r.o.WakeTimeout)
	defer deadline.Stop()
	for {
		r.appliedMu.Lock()
		ch := r.applied
		r.appliedMu.Unlock()
		if nrt, ep, c := r.pick(host); nrt == nil || ep != "" || !nrt.Idle {
			return nrt, ep, c
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rt, "", nil
		case <-deadline.C:
			return rt, "", nil
		}
	}
}

// appStats is an app's live concurrency and last activity.
type appStats struct {
	active atomic.Int64
	last   atomic.Int64 // unix nanoseconds
}

func (s *appStats) begin() { s.active.Add(1); s.last.Store(time.Now().UnixNano()) }
func (s *appStats) end()   { s.active.Add(-1); s.last.Store(time.Now().UnixNano()) }

func (r *Router) appStats(appKey string) *appStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	s := r.stats[appKey]
	if s == nil {
		s = &appStats{}
		r.stats[appKey] = s
	}
	return s
}

// Concurrency is the app's requests in flight, WebSockets included, and
// requests held while it wakes.
func (r *Router) Concurrency(appKey string) int { return int(r.appStats(appKey).active.Load()) }

// LastActivity is when a request of the app last began or ended (zero if
// none since the router started).
func (r *Router) LastActivity(appKey string) time.Time {
	n := r.appStats(appKey).last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	ep, _ := pr.In.Context().Value(ctxKey{}).(string)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = ep
	pr.Out.Host = pr.In.Host
	// Clients' own X-Forwarded-* are not trusted: replaced, not appended.
	client, _, _ := net.SplitHostPort(pr.In.RemoteAddr)
	pr.Out.Header.Set("X-Forwarded-For", client)
	pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	pr.Out.Header.Set("X-Forwarded-Proto", proto)
}

func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	if r.logLimit.allow() {
		r.log.Warn("proxy error", "host", req.Host, "gear", req.Context().Value(ctxKey{}), "err", err)
	}
	page(w, req, http.StatusBadGateway, "App not responding", fmt.Sprintf("The app at %s did not answer. Its owner can look at `gantry logs`.", hostOnly(req.Host)))
}

func page(w http.ResponseWriter, req *http.Request, status int, title, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	if !strings.Contains(req.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintf(w, "%d %s: %s\n", status, title, msg)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>%d %s</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}h1{font-size:1.6em}code{background:#eee;padding:0 .2em}</style>
</head><body><h1>%s</h1><p>%s</p><p><small>Gantry · %d</small></p></body></html>
`, status, html.EscapeString(title), html.EscapeString(title), codeSpans(html.EscapeString(msg)), status)
}

// codeSpans turns `x` into <code>x</code> in an already escaped string.
func codeSpans(s string) string {
	parts := strings.Split(s, "`")
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 && i < len(parts)-1 {
			b.WriteString("<code>" + p + "</code>")
		} else {
			if i%2 == 1 {
				b.WriteString("`")
			}
			b.WriteString(p)
		}
	}
	return b.String()
}

// rateLimit lets at most 10 log lines a second through: clients can
// trigger proxy errors at will, and must not flood the log.
type rateLimit struct {
	second atomic.Int64
	count  atomic.Int64
}

func (l *rateLimit) allow() bool {
	now := time.Now().Unix()
	if l.second.Swap(now) != now {
		l.count.Store(0)
	}
	return l.count.Add(1) <= 10
}
