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
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/gantry-paas/gantry/internal/edge/connguard"
	"github.com/gantry-paas/gantry/internal/edge/h2"
	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// Options configure a Router.
type Options struct {
	Log *slog.Logger
	// Listen is the HTTP address, e.g. ":80" or "127.0.0.1:0".
	Listen string
	// ListenFunc binds the HTTP and HTTPS ports (default net.Listen); the
	// server passes its hand-off's, so a restart keeps the sockets.
	ListenFunc func(network, addr string) (net.Listener, error)
	// TLSListen is the HTTPS address (":443"); empty: no TLS.
	TLSListen string
	// HTTP3 serves HTTP/3 on the HTTPS port's UDP twin and advertises it.
	HTTP3 bool
	// Certs issues certificates for the cloud domain (the platform CA);
	// ACME, if set, for aliases without an uploaded certificate.
	Certs CertSource
	ACME  ACME
	// PlatformHosts are served by Platform (the API, git over HTTP) instead
	// of an app.
	PlatformHosts []string
	Platform      http.Handler
	// DialTimeout bounds connecting to a gear (default 5s); apps may set
	// their own.
	DialTimeout time.Duration
	// TunnelTimeout closes WebSocket and TCP connections idle that long
	// (default 1h); apps may set their own.
	TunnelTimeout time.Duration
	// HeaderTimeout bounds reading a request's headers and the TLS
	// handshake (default 10s): slow clients cannot hold connections.
	HeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive client connections (default 120s).
	IdleTimeout time.Duration
	// MaxHeaderBytes limits request headers (default 64 KiB): 431 above.
	MaxHeaderBytes int
	// MaxConnsPerClient caps the connections one client address holds open
	// on the HTTP, HTTPS and TCP-route ports together (trusted proxies are
	// exempt); over it a connection is reset, counted and logged. 0: no cap.
	MaxConnsPerClient int
	// TrustedProxies may set X-Forwarded-*: from them the headers are kept
	// (the client appended); from anyone else they are replaced.
	TrustedProxies []netip.Prefix
	// HealthInterval is how often TCP route members are checked (2s).
	HealthInterval time.Duration
	// AccessLog receives a line per request and TCP connection; nil: none.
	AccessLog io.Writer
	// AccessTap receives the access lines of apps with log drains.
	AccessTap AccessTap
	// Metrics, if set, gets the router's Prometheus collectors.
	Metrics prometheus.Registerer
	// DrainTimeout bounds how long Run, once ctx ends, waits for open
	// requests, WebSockets and TCP connections to finish after it stopped
	// accepting (default 5s); those still open then are closed.
	DrainTimeout time.Duration
	// Waker wakes an idle app; requests to it are held meanwhile, up to
	// WakeTimeout (default 30s), then answered 503.
	Waker       Waker
	WakeTimeout time.Duration
}

// CertSource gives certificates for the names it covers.
type CertSource interface {
	Covers(host string) bool
	Certificate(host string, ips ...net.IP) (*tls.Certificate, error)
}

// ACME obtains certificates for aliases that have no uploaded one.
type ACME interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
	// Manage is called with the hosts that need a certificate, each time
	// the routes change.
	Manage(hosts []string)
	// HandleHTTPChallenge answers the CA's HTTP-01 validation requests.
	HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool
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
	tlsLn net.Listener
	udp   net.PacketConn // HTTP/3 (nil: off)
	h3alt string         // the Alt-Svc header value advertising it
	// altSvcHeader is the same as a header line, for the fast path.
	altSvcHeader []byte
	table        atomic.Pointer[Table]
	proxy        *httputil.ReverseProxy
	trans        *http.Transport
	pool         httpfast.Pool         // the fast path's connections to gears
	fastConns    httpfast.ConnSet      // the fast path's client connections
	loops        atomic.Pointer[loops] // the fast path's keep-alive connections (Run starts them)
	h2Direct     atomic.Int64          // h2 requests serveH2Direct took (for tests)
	h2Looped     atomic.Int64          // and of those, answered from a loop
	tcp          tcpRoutes
	obs          *observer
	certs        certCache
	guard        *connguard.Guard
	down         downSet // gears that refused a connection
	h2           *h2.Server
	tlsConf      *tls.Config // the HTTPS port's
	h3Conf       *tls.Config // HTTP/3's (nil: off)
	tickets      ticketRing
	// drainTimeout is Options.DrainTimeout, changeable while running.
	drainTimeout atomic.Int64

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
	if o.Listen == "" {
		return nil, errors.New("router: Listen is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	defaultDur(&o.DialTimeout, 5*time.Second)
	defaultDur(&o.WakeTimeout, 30*time.Second)
	defaultDur(&o.TunnelTimeout, time.Hour)
	defaultDur(&o.HeaderTimeout, 10*time.Second)
	defaultDur(&o.IdleTimeout, 120*time.Second)
	defaultDur(&o.HealthInterval, 2*time.Second)
	defaultDur(&o.DrainTimeout, 5*time.Second)
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.ListenFunc == nil {
		o.ListenFunc = net.Listen
	}
	ln, err := o.ListenFunc("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("router: listening on %s: %w (another server running? choose another address with --http)", o.Listen, err)
	}
	r := &Router{o: o, log: o.Log.With("component", "router"), ln: ln,
		conns: map[string]*atomic.Int64{}, applied: make(chan struct{}), platform: map[string]bool{}, stats: map[string]*appStats{}}
	if o.TLSListen != "" {
		if r.tlsLn, err = o.ListenFunc("tcp", o.TLSListen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("router: listening on %s: %w (another server running? choose another address with --https)", o.TLSListen, err)
		}
		if o.HTTP3 {
			if r.udp, err = listenUDP(r.tlsLn.Addr().String()); err != nil {
				ln.Close()
				r.tlsLn.Close()
				return nil, fmt.Errorf("router: listening for HTTP/3 on UDP %s: %w (turn it off with --http3=false)", r.tlsLn.Addr(), err)
			}
			r.h3alt = r.altSvc()
			r.altSvcHeader = []byte("Alt-Svc: " + r.h3alt + "\r\n")
		}
	}
	for _, h := range o.PlatformHosts {
		r.platform[strings.ToLower(h)] = true
	}
	r.drainTimeout.Store(int64(o.DrainTimeout))
	r.table.Store(&Table{Routes: map[string]*Route{}, TCP: map[int]*TCPRoute{}, SNI: map[string]*TCPRoute{}})
	r.tcp.init()
	r.obs = newObserver(o.AccessLog, o.Metrics)
	r.obs.tap = o.AccessTap
	r.guard = connguard.New(connguard.Options{Name: "router", PerSource: o.MaxConnsPerClient, Log: r.log,
		Exempt: func(a netip.Addr) bool { return r.trustedAddr(a) }, Refused: r.obs.refused})
	r.newProxy()
	return r, nil
}

func defaultDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// TLSAddr is the bound HTTPS address (nil without TLS).
func (r *Router) TLSAddr() net.Addr {
	if r.tlsLn == nil {
		return nil
	}
	return r.tlsLn.Addr()
}

// Mount makes h the handler of the platform hosts (the API), when it is
// made after the router (it needs the router's ports). Call before Run.
func (r *Router) Mount(h http.Handler) { r.o.Platform = h }

// Addr is the bound HTTP address.
func (r *Router) Addr() net.Addr { return r.ln.Addr() }

// Run serves until ctx ends; the routes are what Set last gave it.
func (r *Router) Run(ctx context.Context) error {
	srv := r.httpServer()
	errc := make(chan error, 2)
	hq := httpfast.NewConnQueue(r.ln.Addr())
	ls := r.startLoops(hq)
	r.loops.Store(&ls)
	if ls != nil {
		r.pool.Spare = ls.lend
	}
	go func() { errc <- srv.Serve(hq) }()
	go r.acceptHTTP(r.ln, hq)
	servers := []*http.Server{srv}
	var h3 *http3.Server
	if r.udp != nil {
		h3 = r.h3Server()
	}
	if r.tlsLn != nil {
		// The router terminates TLS itself (serveTLS); tsrv serves what
		// the fast path hands off, on connections already decrypted.
		tsrv := r.httpServer()
		tsrv.Handler = http.HandlerFunc(r.serveHandedTLS)
		tsrv.ConnContext = tlsConnContext
		r.h2 = r.newH2() // h2 connections: serveTLS hands them over
		r.tlsConf = r.tlsConfig()
		r.tickets.rotate(r.tlsConf, r.h3Conf)
		go r.rotateTickets(ctx, r.tlsConf, r.h3Conf)
		q := httpfast.NewConnQueue(r.tlsLn.Addr())
		go func() { errc <- tsrv.Serve(q) }()
		go r.acceptTLS(r.tlsLn, q, tsrv)
		servers = append(servers, tsrv)
	}
	if h3 != nil {
		go func() {
			if err := h3.Serve(r.udp); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
				r.log.Error("HTTP/3 stopped", "err", err)
			}
		}()
	}
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); r.healthLoop(ctx) }()
	go func() { defer wg.Done(); r.probeLoop(ctx) }()
	go func() { defer wg.Done(); r.pool.PruneLoop(ctx) }()
	go func() { defer wg.Done(); r.obs.log.Run(ctx) }()
	defer wg.Wait()
	defer r.tcp.closeAll()
	for {
		select {
		case <-ctx.Done():
			r.ln.Close()
			if r.tlsLn != nil {
				r.tlsLn.Close()
			}
			r.tcp.closeAll()
			r.fastConns.CloseIdle()
			ls.stop()
			sctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.drainTimeout.Load()))
			for _, s := range servers {
				s.Shutdown(sctx)
			}
			if r.h2 != nil {
				r.h2.Shutdown(sctx)
			}
			ls.wait(sctx)
			if h3 != nil {
				h3.Shutdown(sctx)
				h3.Close()
				r.udp.Close()
			}
			r.drain(sctx) // tunnels and TCP connections, which Shutdown does not wait for
			cancel()
			for range servers {
				<-errc
			}
			return nil
		case err := <-errc:
			return fmt.Errorf("router: %w", err)
		}
	}
}

func (r *Router) httpServer() *http.Server {
	return &http.Server{
		Handler:           r,
		ReadHeaderTimeout: r.o.HeaderTimeout,
		IdleTimeout:       r.o.IdleTimeout,
		MaxHeaderBytes:    r.o.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
}

// Set compiles the state of revision rev into a route table and swaps it
// in; the control side calls it on every change of the store.
func (r *Router) Set(rev int64, s State) {
	t := Compile(rev, s, r.certs.parse)
	r.Apply(t)
	if r.o.ACME != nil {
		var need []string
		for h, rt := range t.Routes {
			if rt.Alias && rt.Cert == nil && !strings.HasPrefix(h, "*.") {
				need = append(need, h)
			}
		}
		sort.Strings(need)
		r.o.ACME.Manage(need)
	}
}

// Apply swaps in a new route table.
func (r *Router) Apply(t *Table) {
	// Routes carry their endpoints' counters and their app's stats, so
	// the request path looks nothing up under a lock.
	r.connsMu.Lock()
	for _, rt := range t.Routes {
		rt.counters = make([]*atomic.Int64, len(rt.Endpoints))
		for i, ep := range rt.Endpoints {
			if r.conns[ep] == nil {
				r.conns[ep] = new(atomic.Int64)
			}
			rt.counters[i] = r.conns[ep]
		}
	}
	r.connsMu.Unlock()
	for _, rt := range t.Routes {
		rt.stats = r.statsOf(rt.AppKey, rt.App)
	}
	r.table.Store(t)
	r.syncTCP(t)
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

// pick chooses the endpoint with the fewest open requests and counts the
// request on it. If the table changed meanwhile and the endpoint left it,
// it picks again, so that a drained gear never gets a request after the
// agent saw its count reach zero.
func (r *Router) pick(host string) (rt *Route, ep string, c *atomic.Int64) {
	for {
		t := r.table.Load()
		rt = t.Lookup(host)
		if rt == nil || len(rt.Endpoints) == 0 {
			return rt, "", nil
		}
		best, bestN := 0, int64(-1)
		start := 0
		if len(rt.Endpoints) > 1 {
			start = int(r.rr.Add(1))
		}
		for pass := 0; pass < 2 && bestN < 0; pass++ {
			for i := range rt.Endpoints {
				j := (start + i) % len(rt.Endpoints)
				if pass == 0 && r.isDown(rt.Endpoints[j]) {
					continue // every gear down: the second pass tries them anyway
				}
				if n := rt.counters[j].Load(); bestN < 0 || n < bestN {
					best, bestN = j, n
				}
			}
		}
		c = rt.counters[best]
		c.Add(1)
		ep = rt.Endpoints[best]
		if r.table.Load() == t || stillRouted(r.table.Load(), host, ep) {
			return rt, ep, c
		}
		c.Add(-1)
	}
}

func stillRouted(t *Table, host, ep string) bool {
	rt := t.Lookup(host)
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

// SetDrainTimeout changes how long Run waits for open connections once
// ctx ends (a hand-off gives them longer than a plain stop).
func (r *Router) SetDrainTimeout(d time.Duration) { r.drainTimeout.Store(int64(d)) }

// drain waits until no request, WebSocket or TCP connection is open, or
// ctx ends.
func (r *Router) drain(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		open := int64(0)
		r.statsMu.Lock()
		for _, s := range r.stats {
			open += s.active.Load()
		}
		r.statsMu.Unlock()
		if open == 0 {
			return
		}
		select {
		case <-ctx.Done():
			r.log.Info("closing connections still open after the drain time", "open", open)
			return
		case <-tick.C:
		}
	}
}

// localOrTrusted says whether a client may use the platform (API, git
// over HTTP) over plain HTTP: from this machine, or through a trusted
// proxy (which terminated TLS itself).
func (r *Router) localOrTrusted(remote string) bool {
	ip, _, _ := net.SplitHostPort(remote)
	a, err := netip.ParseAddr(ip)
	return err == nil && (a.Unmap().IsLoopback() || r.trustedAddr(a))
}

// platformNeedsTLS answers a plain-HTTP platform request from elsewhere:
// API tokens and git credentials travel over HTTPS only. A browser's GET
// is sent there; anything else is refused with what to use.
func (r *Router) platformNeedsTLS(w http.ResponseWriter, req *http.Request, host string) {
	if r.tlsLn != nil && req.Method == http.MethodGet && req.Header.Get("Authorization") == "" {
		r.redirect(w, req, true, host)
		return
	}
	to := "the server's https:// address"
	if r.tlsLn != nil {
		to = "https://" + host + httpsPortSuffix(r.tlsLn.Addr()) + "/"
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, `{"title":"Forbidden","status":403,"code":"https_required","detail":%q}`,
		"this server takes API tokens and git credentials over HTTPS only, except from its own machine: use "+to+" (`gantry login --server "+to+"`)")
}

func httpsPortSuffix(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && t.Port != 443 {
		return ":" + strconv.Itoa(t.Port)
	}
	return ""
}

// ServeHTTP routes one request.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.h3alt != "" && req.TLS != nil && req.ProtoMajor < 3 {
		w.Header().Set("Alt-Svc", r.h3alt)
	}
	host := hostOnly(req.Host)
	if r.platform[host] && r.o.Platform != nil {
		// The platform root certificate is public: it is what a client
		// fetches (and checks by its fingerprint) before it can use HTTPS.
		public := req.Method == http.MethodGet && req.URL.Path == "/v1/ca" && req.Header.Get("Authorization") == ""
		if req.TLS == nil && !public && !r.localOrTrusted(req.RemoteAddr) {
			r.platformNeedsTLS(w, req, host)
			return
		}
		if isExtendedConnect(req) {
			r.h2WebSocket(w, req, r.platformConn(req), r.o.TunnelTimeout)
			return
		}
		r.o.Platform.ServeHTTP(w, req)
		return
	}
	if r.o.ACME != nil && strings.HasPrefix(req.URL.Path, "/.well-known/acme-challenge/") && r.o.ACME.HandleHTTPChallenge(w, req) {
		return
	}
	if rt := r.table.Load().Lookup(host); rt != nil {
		switch {
		case rt.RedirectTo != "":
			r.redirect(w, req, req.TLS != nil || rt.HTTPS == HTTPSRedirect && r.tlsLn != nil, rt.RedirectTo)
			return
		case req.TLS == nil && rt.HTTPS == HTTPSRedirect && r.tlsLn != nil:
			r.redirect(w, req, true, host)
			return
		case req.TLS != nil && rt.HTTPS == HTTPSOff:
			r.redirect(w, req, false, host)
			return
		}
	}
	start := time.Now()
	rt, ep, c := r.pick(host)
	var st *appStats
	if rt != nil {
		st = rt.stats
		st.begin()
		defer st.end()
		if ep == "" && rt.Idle && r.o.Waker != nil {
			rt, ep, c = r.holdForWake(req.Context(), host, rt)
			if ep == "" && req.Context().Err() == nil {
				r.obs.page(w, req, st, start, http.StatusServiceUnavailable, "App did not wake", fmt.Sprintf("The app at %s was idle and did not start within %s. Its owner can look at `gantry app events %s` and `gantry logs %s`.", host, r.o.WakeTimeout, rt.App, rt.App))
				return
			}
		}
	}
	switch {
	case rt == nil:
		r.obs.page(w, req, nil, start, http.StatusNotFound, "No app here", fmt.Sprintf("No app is served at %s. Check the address, or create the app with `gantry app create`.", host))
		return
	case ep == "" && rt.Stopped:
		r.obs.page(w, req, st, start, http.StatusServiceUnavailable, "App stopped", fmt.Sprintf("The app at %s is stopped. Its owner can start it with `gantry app start %s`.", host, rt.App))
		return
	case ep == "":
		r.obs.page(w, req, st, start, http.StatusServiceUnavailable, "App not running", fmt.Sprintf("The app at %s has no running gears yet. Push code to deploy it, or check `gantry app show %s`.", host, rt.App))
		return
	}
	defer c.Add(-1)
	if pooledOK(req) {
		r.forwardPooled(w, req, rt, ep, st, start)
		return
	}
	r.forward(w, req, rt, ep, st, start)
}

// redirect answers with a permanent redirect to host over https or http,
// keeping the path and query.
func (r *Router) redirect(w http.ResponseWriter, req *http.Request, https bool, host string) {
	scheme, port := "http", r.Addr().(*net.TCPAddr).Port
	if https {
		scheme, port = "https", r.TLSAddr().(*net.TCPAddr).Port
	}
	u := scheme + "://" + host
	if !(port == 80 && !https || port == 443 && https) {
		u += ":" + strconv.Itoa(port)
	}
	u += req.URL.RequestURI()
	code := http.StatusMovedPermanently
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		code = http.StatusPermanentRedirect // keeps the method and body
	}
	http.Redirect(w, req, u, code)
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

// Concurrency is the app's requests in flight, WebSockets included, and
// requests held while it wakes.
func (r *Router) Concurrency(appKey string) int { return int(r.statsOf(appKey, "").active.Load()) }

// LastActivity is when a request of the app last began or ended (zero if
// none since the router started).
func (r *Router) LastActivity(appKey string) time.Time {
	n := r.statsOf(appKey, "").last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
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
