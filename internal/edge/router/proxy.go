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
	"net/netip"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/accesslog"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// target is what the proxy needs to know about one request: the gear and
// the route's timeouts.
type target struct {
	ep string
	rt *Route
}

var errReadTimeout = httpfast.ErrReadTimeout

func (r *Router) newProxy() {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := r.o.DialTimeout
		if t, _ := ctx.Value(ctxKey{}).(*target); t != nil && t.rt.ConnectTimeout > 0 {
			d = t.rt.ConnectTimeout
		}
		c, err := (&net.Dialer{Timeout: d, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			r.markDown(addr, err)
		}
		return c, err
	}
	r.trans = &http.Transport{
		Proxy:               nil,
		DialContext:         dial,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		// Below Node.js's 5 s keep-alive: a pooled connection is never
		// reused just as the app closes it.
		IdleConnTimeout:   4 * time.Second,
		ForceAttemptHTTP2: false,
		// The router passes what the client sent (gzip included) as is.
		DisableCompression: true,
	}
	// Upgrades (WebSockets) get connections of their own, closed when
	// idle for the tunnel timeout (either direction counts as activity).
	tunnels := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			idle := r.o.TunnelTimeout
			if t, _ := ctx.Value(ctxKey{}).(*target); t != nil && t.rt.TunnelTimeout > 0 {
				idle = t.rt.TunnelTimeout
			}
			return newIdleConn(c, idle), nil
		},
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	r.proxy = &httputil.ReverseProxy{
		Rewrite:   r.rewrite,
		Transport: roundTripper{pool: r.trans, tunnels: tunnels},
		// Responses of unknown length and server-sent events are flushed
		// as they come (ReverseProxy does so for them); the rest as the
		// buffer fills, so that HTTP/2 can put several streams in one write.
		FlushInterval: 0,
		ErrorHandler:  r.proxyError,
		ErrorLog:      slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
		BufferPool:    bufferPool{},
	}
}

// forward proxies one request to ep and records it.
func (r *Router) forward(w http.ResponseWriter, req *http.Request, rt *Route, ep string, st *appStats, start time.Time) {
	rec := recorders.Get().(*accesslog.Recorder)
	rec.ResponseWriter, rec.Status, rec.Bytes = w, 0, 0
	var body *countingBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &countingBody{ReadCloser: req.Body}
		req.Body = body
	}
	if isExtendedConnect(req) {
		r.forwardH2WebSocket(w, req, rt, ep, st, start)
		return
	}
	ws := isUpgrade(req)
	if ws {
		st.websockets.Inc()
	}
	r.proxy.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), ctxKey{}, &target{ep: ep, rt: rt})))
	if ws {
		st.websockets.Dec()
	}
	var in int64
	if body != nil {
		in = body.n.Load()
	}
	r.obs.record(req, st, start, rec.Status, in, rec.Bytes, ep)
	rec.ResponseWriter = nil
	recorders.Put(rec)
}

// forwardH2WebSocket carries a WebSocket opened over h2 to ep.
func (r *Router) forwardH2WebSocket(w http.ResponseWriter, req *http.Request, rt *Route, ep string, st *appStats, start time.Time) {
	d := r.o.DialTimeout
	if rt.ConnectTimeout > 0 {
		d = rt.ConnectTimeout
	}
	conn, err := net.DialTimeout("tcp", ep, d)
	if err != nil {
		r.markDown(ep, err)
		r.obs.page(w, req, st, start, http.StatusBadGateway, "App not responding", "The app at "+hostOnly(req.Host)+" did not answer. Its owner can look at `gantry logs`.")
		return
	}
	idle := r.o.TunnelTimeout
	if rt.TunnelTimeout > 0 {
		idle = rt.TunnelTimeout
	}
	st.websockets.Inc()
	status, in, out := r.h2WebSocket(w, req, conn, idle)
	st.websockets.Dec()
	r.obs.record(req, st, start, status, in, out, ep)
}

func isUpgrade(req *http.Request) bool {
	return req.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade")
}

type roundTripper struct{ pool, tunnels *http.Transport }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Upgrade") != "" {
		return rt.tunnels.RoundTrip(req)
	}
	t, _ := req.Context().Value(ctxKey{}).(*target)
	if t == nil || t.rt.ReadTimeout <= 0 {
		return rt.pool.RoundTrip(req)
	}
	// The app must start its response within its read timeout; the body
	// may then stream for as long as it takes.
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.rt.ReadTimeout, func() { cancel(errReadTimeout) })
	resp, err := rt.pool.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() && err != nil {
		return nil, errReadTimeout
	}
	return resp, err
}

func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	t, _ := pr.In.Context().Value(ctxKey{}).(*target)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = t.ep
	pr.Out.Host = pr.In.Host
	// ReverseProxy drops Forwarded before Rewrite: a trusted proxy's is
	// put back, as the fast path passes it on.
	if f := pr.In.Header.Values("Forwarded"); len(f) > 0 {
		pr.Out.Header["Forwarded"] = f
	}
	r.setForwarded(pr.In, pr.Out.Header)
}

// fwd are the forwarding headers a request gets on its way to a gear.
type fwd struct {
	realIP, xff, xfh, xfp string
	forwarded             []string // a trusted proxy's, passed on
}

// forwarded computes the X-Forwarded-*, X-Real-IP and Forwarded headers
// of in: a trusted proxy's are kept (its hop appended), anyone else's
// replaced or dropped, never passed on.
func (r *Router) forwarded(in *http.Request) fwd {
	client, _, _ := net.SplitHostPort(in.RemoteAddr)
	f := fwd{xfp: "http", xfh: in.Host, realIP: client}
	if in.TLS != nil {
		f.xfp = "https"
	}
	if r.trusted(client) {
		if ip := in.Header.Get("X-Real-IP"); ip != "" {
			f.realIP = ip // the proxy's own
		}
		f.forwarded = in.Header.Values("Forwarded")
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			client = strings.Join(prior, ", ") + ", " + client
		}
		if p := in.Header.Get("X-Forwarded-Proto"); p != "" {
			f.xfp = p
		}
		if h := in.Header.Get("X-Forwarded-Host"); h != "" {
			f.xfh = h
		}
	}
	f.xff = client
	return f
}

// setForwarded sets the forwarding headers of out, a copy of in's headers
// going to a gear.
func (r *Router) setForwarded(in *http.Request, out http.Header) {
	f := r.forwarded(in)
	out.Set("X-Real-IP", f.realIP)
	if f.forwarded == nil {
		out.Del("Forwarded")
	}
	out.Set("X-Forwarded-Host", f.xfh)
	out.Set("X-Forwarded-For", f.xff)
	out.Set("X-Forwarded-Proto", f.xfp)
}

// withTarget is req's context with the gear it goes to (for proxyError).
func withTarget(req *http.Request, ep string, rt *Route) context.Context {
	return context.WithValue(req.Context(), ctxKey{}, &target{ep: ep, rt: rt})
}

func (r *Router) trusted(ip string) bool {
	if len(r.o.TrustedProxies) == 0 {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return r.trustedAddr(a)
}

// trustedAddr says whether a is one of the trusted proxies.
func (r *Router) trustedAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range r.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return // the client went away
	}
	t, _ := req.Context().Value(ctxKey{}).(*target)
	if r.logLimit.allow() {
		r.log.Warn("proxy error", "host", req.Host, "gear", t.ep, "err", err)
	}
	if errors.Is(err, errReadTimeout) {
		page(w, req, http.StatusGatewayTimeout, "App too slow", fmt.Sprintf("The app at %s did not start its answer within %s. Its owner can raise it with `gantry app set %s --read-timeout`.", hostOnly(req.Host), t.rt.ReadTimeout, t.rt.App))
		return
	}
	page(w, req, http.StatusBadGateway, "App not responding", fmt.Sprintf("The app at %s did not answer. Its owner can look at `gantry logs`.", hostOnly(req.Host)))
}

// page writes one of the router's own pages and returns its size.
func page(w http.ResponseWriter, req *http.Request, status int, title, msg string) int {
	return pageFor(w, req.Header.Get("Accept"), status, title, msg)
}

// pageFor is page for a client that accepts accept.
func pageFor(w http.ResponseWriter, accept string, status int, title, msg string) int {
	w.Header().Set("Cache-Control", "no-store")
	if !strings.Contains(accept, "text/html") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		n, _ := fmt.Fprintf(w, "%d %s: %s\n", status, title, msg)
		return n
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	n, _ := fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>%d %s</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}h1{font-size:1.6em}code{background:#eee;padding:0 .2em}</style>
</head><body><h1>%s</h1><p>%s</p><p><small>Gantry · %d</small></p></body></html>
`, status, html.EscapeString(title), html.EscapeString(title), codeSpans(html.EscapeString(msg)), status)
	return n
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
