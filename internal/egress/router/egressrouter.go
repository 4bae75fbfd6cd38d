// Package egressrouter is the platform's dedicated exit for apps bound to
// it. It listens on the gear network's gateway and knows an app by the
// source address of its gears:
//
//   - HTTP proxy mode: a forward proxy (absolute-URL requests and
//     CONNECT) whose ACL allows or denies by hostname, wildcard and CIDR;
//   - redirect mode: gear connections to chosen destinations are
//     translated (in the gear's namespace) to one of the router's redirect
//     ports, and spliced to the redirect's fixed target;
//   - TCP proxy mode: the router listens on a port and forwards to the
//     proxy's targets, round-robin over the healthy ones.
//
// Every connection is logged (access log) and counted (Prometheus) by app,
// mode and destination. The router never dials the platform's own
// networks (Forbidden): a bound app cannot use it to reach around its
// isolation.
package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-paas/gantry/internal/edge/accesslog"
	"github.com/gantry-paas/gantry/internal/edge/connguard"
	"github.com/gantry-paas/gantry/internal/edge/health"
	"github.com/gantry-paas/gantry/internal/edge/httpfast"
	"github.com/gantry-paas/gantry/internal/egress/policy"
	"github.com/gantry-paas/gantry/internal/handoff"
)

// Options configure the router.
type Options struct {
	// Addr is where it listens (the gear network's gateway).
	Addr netip.Addr
	// ProxyPort is the HTTP proxy's port; 0 picks a free one.
	ProxyPort int
	// Redirects is the number of redirect ports (redirects per app),
	// 16 by default, from RedirectBase (0: ProxyPort+1, or free ports
	// when ProxyPort is 0).
	Redirects    int
	RedirectBase int
	// Forbidden are networks the router never dials.
	Forbidden []netip.Prefix
	// DialTimeout bounds connecting to a destination (5 s).
	DialTimeout time.Duration
	// HealthInterval is the TCP proxies' health check period (2 s).
	HealthInterval time.Duration
	// ListenWith binds the proxy and redirect ports (default: lc.Listen);
	// the server passes its hand-off's, so a restart keeps the sockets.
	ListenWith func(lc *net.ListenConfig, network, addr string) (net.Listener, error)
	// MaxConnsPerGear caps the connections one gear holds open through
	// the router, all its ports together; over it a connection is reset,
	// counted and logged. 0: no cap.
	MaxConnsPerGear int
	AccessLog       io.Writer
	Registerer      prometheus.Registerer
	Log             *slog.Logger
}

// App is one app's use of the router.
type App struct {
	Name      string // DOMAIN/NAME, for logs and metrics
	Gears     []netip.Addr
	Proxy     bool
	ACL       policy.ACL
	Redirects []Redirect // redirect k arrives on RedirectPorts()[k]
	TCP       []TCPProxy
}

// Redirect is a fixed L4 target for what a redirect caught.
type Redirect struct {
	Match  string // what the gear's namespace translates (for logs)
	Target string // HOST:PORT
}

// TCPProxy forwards Port to Targets.
type TCPProxy struct {
	Port    int
	Targets []string
}

// config is one immutable version of the apps, by gear address.
type config struct {
	bySrc map[netip.Addr]*App
	ports map[int]bool // TCP proxy ports
}

// Router is the egress router.
type Router struct {
	o   Options
	log *slog.Logger
	cfg atomic.Pointer[config]
	obs *observer

	proxyLn     net.Listener
	redirectLns []net.Listener
	transport   *http.Transport
	dialer      *net.Dialer
	upstreams   httpfast.Pool    // the fast path's connections to destinations
	fastConns   httpfast.ConnSet // the fast path's client connections

	mu      sync.Mutex
	ctx     context.Context
	tcpLns  map[int]net.Listener
	tcpErrs map[int]error
	health  map[string]*health.State
	rr      atomic.Uint64
	guard   *connguard.Guard

	forbidden atomic.Pointer[[]netip.Prefix] // Options.Forbidden, then SetForbidden's
}

// New creates a router; Start listens.
func New(o Options) *Router {
	if o.Redirects == 0 {
		o.Redirects = 16
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Router{o: o, log: o.Log, obs: newObserver(o.AccessLog, o.Registerer),
		tcpLns: map[int]net.Listener{}, tcpErrs: map[int]error{}, health: map[string]*health.State{}}
	r.guard = connguard.New(connguard.Options{Name: "egress-router", PerSource: o.MaxConnsPerGear, Log: r.log, Refused: r.obs.refused})
	r.cfg.Store(&config{})
	r.SetForbidden(o.Forbidden)
	// No TCP keep-alive probes (as HAProxy and squid by default): they
	// cost three setsockopt calls a connection and the destinations'
	// own timeouts end dead connections.
	r.dialer = &net.Dialer{Timeout: o.DialTimeout, Control: r.control, KeepAlive: -1}
	r.transport = &http.Transport{DialContext: r.dialer.DialContext, MaxIdleConns: 1024, MaxIdleConnsPerHost: 256,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true, ResponseHeaderTimeout: 0}
	return r
}

// control refuses connections to the forbidden networks (after name
// resolution: a name pointing at the platform is refused too).
func (r *Router) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	if r.Forbidden(ap.Addr()) {
		return &forbiddenError{ap.Addr().Unmap()}
	}
	return nil
}

// SetForbidden replaces the networks the router never dials (the host's
// addresses change: an interface comes up later, a DHCP lease changes).
// It holds for the HTTP proxy, redirects and TCP proxies alike: they all
// dial through the same check.
func (r *Router) SetForbidden(nets []netip.Prefix) {
	nets = append([]netip.Prefix(nil), nets...)
	r.forbidden.Store(&nets)
}

// Forbidden says the router never dials addr.
func (r *Router) Forbidden(addr netip.Addr) bool {
	for _, p := range *r.forbidden.Load() {
		if p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// Gateway is the address the router listens on.
func (r *Router) Gateway() netip.Addr { return r.o.Addr }

type forbiddenError struct{ addr netip.Addr }

func (e *forbiddenError) Error() string {
	return fmt.Sprintf("%s is on one of the platform's own networks: the egress router does not go there", e.addr)
}

// Start listens on the proxy and redirect ports and serves until ctx
// ends.
func (r *Router) Start(ctx context.Context) error {
	listen := func(port int) (net.Listener, error) {
		addr := netip.AddrPortFrom(r.o.Addr, uint16(port))
		if r.o.ListenWith != nil {
			return r.o.ListenWith(&net.ListenConfig{KeepAlive: -1}, "tcp", addr.String())
		}
		return listenTCP(addr)
	}
	var err error
	if r.proxyLn, err = listen(r.o.ProxyPort); err != nil {
		return fmt.Errorf("egress router HTTP proxy: %w", err)
	}
	base := r.o.RedirectBase
	if base == 0 && r.o.ProxyPort != 0 {
		base = r.o.ProxyPort + 1
	}
	for k := 0; k < r.o.Redirects; k++ {
		port := 0
		if base != 0 {
			port = base + k
		}
		ln, err := listen(port)
		if err != nil {
			r.proxyLn.Close()
			for _, l := range r.redirectLns {
				l.Close()
			}
			return fmt.Errorf("egress router redirect port: %w", err)
		}
		r.redirectLns = append(r.redirectLns, ln)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serveProxy), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: log.New(io.Discard, "", 0), ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, srcKey{}, addrOf(c.RemoteAddr()))
		}}
	q := httpfast.NewConnQueue(r.proxyLn.Addr())
	go srv.Serve(q)
	go r.acceptProxy(r.proxyLn, q)
	for k, ln := range r.redirectLns {
		go r.accept(ln, func(c net.Conn) { r.serveRedirect(c, k) })
	}
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	r.syncTCP()
	go r.healthLoop(ctx)
	go r.obs.log.Run(ctx)
	go r.upstreams.PruneLoop(ctx)
	go func() {
		<-ctx.Done()
		r.proxyLn.Close()
		r.fastConns.CloseIdle()
		srv.Close()
		for _, ln := range r.redirectLns {
			ln.Close()
		}
		r.mu.Lock()
		for p, ln := range r.tcpLns {
			ln.Close()
			delete(r.tcpLns, p)
		}
		r.mu.Unlock()
		r.transport.CloseIdleConnections()
	}()
	r.log.Info("egress router listening", "proxy", r.proxyLn.Addr().String(), "redirect_ports", fmt.Sprint(r.RedirectPorts()))
	return nil
}

// ProxyAddr is the HTTP proxy's address.
func (r *Router) ProxyAddr() netip.AddrPort {
	if r.proxyLn == nil { // not started: the configured port
		return netip.AddrPortFrom(r.o.Addr, uint16(r.o.ProxyPort))
	}
	return addrPortOf(r.proxyLn.Addr())
}

// RedirectPorts are the redirect ports, redirect k on the k-th.
func (r *Router) RedirectPorts() []uint16 {
	if r.redirectLns == nil && r.o.ProxyPort != 0 { // not started
		base := r.o.RedirectBase
		if base == 0 {
			base = r.o.ProxyPort + 1
		}
		out := make([]uint16, r.o.Redirects)
		for k := range out {
			out[k] = uint16(base + k)
		}
		return out
	}
	out := make([]uint16, len(r.redirectLns))
	for i, ln := range r.redirectLns {
		out[i] = addrPortOf(ln.Addr()).Port()
	}
	return out
}

// Apply replaces the apps atomically: connections open now keep going,
// new ones see the new configuration; TCP proxy ports follow.
func (r *Router) Apply(apps []App) {
	c := &config{bySrc: map[netip.Addr]*App{}, ports: map[int]bool{}}
	for i := range apps {
		a := &apps[i]
		for _, g := range a.Gears {
			c.bySrc[g.Unmap()] = a
		}
		for _, t := range a.TCP {
			c.ports[t.Port] = true
		}
	}
	r.cfg.Store(c)
	r.syncTCP()
}

// PortError says why a TCP proxy port is not being listened on (nil: it
// is, or it is not configured).
func (r *Router) PortError(port int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tcpErrs[port]
}

func (r *Router) syncTCP() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx == nil || r.ctx.Err() != nil {
		return
	}
	c := r.cfg.Load()
	for port, ln := range r.tcpLns {
		if !c.ports[port] {
			ln.Close()
			delete(r.tcpLns, port)
		}
	}
	for port := range r.tcpErrs {
		if !c.ports[port] {
			delete(r.tcpErrs, port)
		}
	}
	for port := range c.ports {
		if r.tcpLns[port] != nil {
			continue
		}
		ln, err := handoff.ListenShared(net.ListenConfig{KeepAlive: -1}, "tcp", netip.AddrPortFrom(r.o.Addr, uint16(port)).String())
		if err != nil {
			r.tcpErrs[port] = err
			r.log.Warn("egress router cannot listen for a TCP proxy", "port", port, "err", err)
			continue
		}
		delete(r.tcpErrs, port)
		r.tcpLns[port] = ln
		go r.accept(ln, func(c net.Conn) { r.serveTCP(c, port) })
	}
	// Health state follows the targets.
	live := map[string]bool{}
	for _, a := range c.bySrc {
		for _, t := range a.TCP {
			for _, dst := range t.Targets {
				live[dst] = true
				if r.health[dst] == nil {
					r.health[dst] = &health.State{}
				}
			}
		}
	}
	for dst := range r.health {
		if !live[dst] {
			delete(r.health, dst)
		}
	}
}

// appOf is the app whose gear has address src (nil: none).
func (r *Router) appOf(src netip.Addr) *App { return r.cfg.Load().bySrc[src.Unmap()] }

func (r *Router) accept(ln net.Listener, serve func(net.Conn)) {
	r.guard.Serve(ln, ln.Addr().String(), serve)
}

// serveRedirect splices a redirected connection to its target.
func (r *Router) serveRedirect(c net.Conn, k int) {
	defer c.Close()
	start := time.Now()
	src := addrOf(c.RemoteAddr())
	app := r.appOf(src)
	e := entry{mode: "redirect", gear: src, start: start}
	if app == nil || k >= len(app.Redirects) {
		e.result, e.err = "denied", errors.New("no redirect of an app on this port for this address")
		if app != nil {
			e.app = app.Name
		}
		r.obs.record(&e)
		return
	}
	rd := app.Redirects[k]
	e.app, e.dest = app.Name, rd.Target
	up, err := r.dialer.Dial("tcp", rd.Target)
	r.splice(c, up, err, &e)
}

// splice carries c to the destination dialled for it (or records the
// failed dial), then records the connection.
func (r *Router) splice(c, up net.Conn, dialErr error, e *entry) {
	if dialErr != nil {
		e.result, e.err = "failed", dialErr
		r.obs.record(e)
		return
	}
	defer up.Close()
	e.result = "ok"
	e.out, e.in = pipe(c, up)
	r.obs.record(e)
}

// serveTCP forwards a TCP proxy connection to the next healthy target,
// trying the others when a dial fails.
func (r *Router) serveTCP(c net.Conn, port int) {
	defer c.Close()
	src := addrOf(c.RemoteAddr())
	e := entry{mode: "tcp", gear: src, start: time.Now(), dest: ":" + strconv.Itoa(port)}
	app := r.appOf(src)
	var proxy *TCPProxy
	if app != nil {
		e.app = app.Name
		for i := range app.TCP {
			if app.TCP[i].Port == port {
				proxy = &app.TCP[i]
			}
		}
	}
	if proxy == nil || len(proxy.Targets) == 0 {
		e.result, e.err = "denied", fmt.Errorf("no TCP proxy on port %d for this address", port)
		r.obs.record(&e)
		return
	}
	up, dst, err := r.dialTargets(proxy.Targets)
	e.dest = dst
	r.splice(c, up, err, &e)
}

// dialTargets dials round-robin over the healthy targets (all of them
// when none is healthy), then the others in turn on failure.
func (r *Router) dialTargets(targets []string) (net.Conn, string, error) {
	n := len(targets)
	first := int(r.rr.Add(1) % uint64(n))
	var order []string
	var down []string
	r.mu.Lock()
	for i := 0; i < n; i++ {
		t := targets[(first+i)%n]
		if h := r.health[t]; h != nil && h.Down() {
			down = append(down, t)
			continue
		}
		order = append(order, t)
	}
	r.mu.Unlock()
	order = append(order, down...)
	var last error
	for _, t := range order {
		c, err := r.dialer.Dial("tcp", t)
		if err == nil {
			return c, t, nil
		}
		last = err
	}
	return nil, order[0], last
}

// Healthy says whether a TCP proxy target passes its checks.
func (r *Router) Healthy(target string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.health[target]
	return h != nil && !h.Down()
}

func (r *Router) healthLoop(ctx context.Context) {
	timeout := min(r.o.HealthInterval, time.Second)
	health.Loop(ctx, r.o.HealthInterval, func() map[string]*health.State {
		r.mu.Lock()
		defer r.mu.Unlock()
		targets := map[string]*health.State{}
		for t, h := range r.health {
			targets[t] = h
		}
		return targets
	}, health.Connect(&net.Dialer{Timeout: timeout, Control: r.control}), func(t string, up bool, err error) {
		if up {
			r.log.Info("egress TCP proxy target healthy again", "target", t)
		} else {
			r.log.Warn("egress TCP proxy target failed its checks; out of the pool", "target", t, "err", err)
		}
	})
}

type srcKey struct{}

// serveProxy is the HTTP proxy.
func (r *Router) serveProxy(w http.ResponseWriter, req *http.Request) {
	src, _ := req.Context().Value(srcKey{}).(netip.Addr)
	e := entry{mode: "proxy", gear: src, start: time.Now(), method: req.Method}
	app := r.appOf(src)
	if app == nil || !app.Proxy {
		e.result, e.status = "denied", http.StatusForbidden
		e.err = errors.New("not a gear of an app using the HTTP proxy")
		if app != nil {
			e.app = app.Name
		}
		r.obs.record(&e)
		http.Error(w, "gantry egress router: "+src.String()+" is not a gear of an app that uses the HTTP proxy (gantry egress proxy APP)", http.StatusForbidden)
		return
	}
	e.app = app.Name
	var host string
	var port uint16
	if req.Method == http.MethodConnect {
		h, p, err := net.SplitHostPort(req.Host)
		n, perr := strconv.Atoi(p)
		if err != nil || perr != nil || n < 1 || n > 65535 {
			e.result, e.status = "denied", http.StatusBadRequest
			r.obs.record(&e)
			http.Error(w, "gantry egress router: CONNECT needs HOST:PORT", http.StatusBadRequest)
			return
		}
		host, port = h, uint16(n)
	} else {
		if req.URL.Host == "" || req.URL.Scheme != "http" {
			e.result, e.status = "denied", http.StatusBadRequest
			r.obs.record(&e)
			http.Error(w, "gantry egress router: this is an HTTP proxy; send absolute http:// URLs, and CONNECT for https (set HTTP_PROXY and HTTPS_PROXY)", http.StatusBadRequest)
			return
		}
		host, port = req.URL.Hostname(), 80
		if p := req.URL.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				http.Error(w, "gantry egress router: bad port", http.StatusBadRequest)
				return
			}
			port = uint16(n)
		}
	}
	e.dest = net.JoinHostPort(host, strconv.Itoa(int(port)))
	if ok, n := app.ACL.Allows(host, port); !ok {
		why := "no ACL entry allows it"
		if n > 0 {
			why = fmt.Sprintf("ACL entry %d: %s", n, app.ACL[n-1].Text)
		}
		e.result, e.status, e.err = "denied", http.StatusForbidden, errors.New(why)
		r.obs.record(&e)
		w.Header().Set("X-Gantry-Egress", "denied")
		http.Error(w, fmt.Sprintf("gantry egress router: %s is denied for %s (%s)", e.dest, app.Name, why), http.StatusForbidden)
		return
	}
	if req.Method == http.MethodConnect {
		r.connect(w, req, &e)
		return
	}
	r.forward(w, req, &e)
}

// connect tunnels a CONNECT request.
func (r *Router) connect(w http.ResponseWriter, req *http.Request, e *entry) {
	up, err := r.dialer.DialContext(req.Context(), "tcp", e.dest)
	if err != nil {
		e.result, e.status, e.err = "failed", http.StatusBadGateway, err
		r.obs.record(e)
		http.Error(w, "gantry egress router: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		e.result, e.err = "failed", err
		r.obs.record(e)
		return
	}
	defer c.Close()
	if pc, ok := c.(*httpfast.PrefixConn); ok && pc.Inner() != nil {
		c = pc.Inner() // handed over by the fast path: splice needs the TCP connection itself
	}
	c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		return
	}
	e.result, e.status = "ok", http.StatusOK
	var early int64
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
		early = int64(n)
	}
	e.out, e.in = pipe(c, up)
	e.out += early
	r.obs.record(e)
}

// forward relays a plain HTTP request.
func (r *Router) forward(w http.ResponseWriter, req *http.Request, e *entry) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Host = pr.In.Host
			pr.Out.RequestURI = ""
		},
		Transport:     r.transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			e.result, e.err = "failed", err
			e.status = http.StatusBadGateway
			http.Error(w, "gantry egress router: "+err.Error(), http.StatusBadGateway)
		},
	}
	body := &countReader{r: req.Body}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = body
	}
	rec := &accesslog.Recorder{ResponseWriter: w}
	e.result = "ok"
	rp.ServeHTTP(rec, req)
	if e.status == 0 {
		e.status = rec.Status
	}
	e.out, e.in = body.n, rec.Bytes
	r.obs.record(e)
}

type countReader struct {
	r io.ReadCloser
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
func (c *countReader) Close() error { return c.r.Close() }

// pipe copies both ways until both directions end (each direction's end
// is passed on as a half-close), and returns the bytes a→b and b→a. TCP
// to TCP copies are spliced by the kernel.
func pipe(a, b net.Conn) (ab, ba int64) {
	done := make(chan int64, 1)
	go func() {
		n := copyConn(b, a)
		closeWrite(b)
		done <- n
	}()
	ba = copyConn(a, b)
	closeWrite(a)
	ab = <-done
	return ab, ba
}

func copyConn(dst, src net.Conn) int64 {
	n, _ := io.Copy(dst, src) // spliced between TCP connections
	return n
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}

// listenTCP listens without keep-alive probes on accepted connections.
func listenTCP(addr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr.String())
}

func addrOf(a net.Addr) netip.Addr { return addrPortOf(a).Addr().Unmap() }

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
