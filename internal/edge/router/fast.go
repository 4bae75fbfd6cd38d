package router

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// The fast path proxies plain HTTP/1.1 requests to running apps without
// net/http: it parses the request head in place, writes it to a pooled
// connection to the gear with the X-Forwarded-* headers set, and copies the
// response back, framing by Content-Length or chunks. Everything else (the
// platform host, redirects, pages, idle apps, upgrades, Expect, chunked
// request bodies, HTTP/1.0, anything unusual) is handed, with the bytes
// already read, to the net/http server, at a request boundary. The two
// paths count, log and measure requests the same way.

// acceptHTTP serves the HTTP port: each connection starts on the fast path.
func (r *Router) acceptHTTP(ln net.Listener, q *httpfast.ConnQueue) {
	defer q.Close()
	r.guard.Serve(ln, "http", func(c net.Conn) { r.serveFast(c, q, false) })
}

// serveFast serves requests on c until one needs net/http, which then
// gets the connection with the unread bytes, or until a plain connection
// kept alive moves to an event loop (loop.go). secure: c is a TLS
// connection of the HTTPS port.
func (r *Router) serveFast(c net.Conn, q *httpfast.ConnQueue, secure bool) {
	// A new connection must send its first byte within the header timeout.
	r.serveFastOn(c, q, secure, r.o.HeaderTimeout)
}

// serveFastOn is serveFast on a connection whose next request may take
// wait to begin.
func (r *Router) serveFastOn(c net.Conn, q *httpfast.ConnQueue, secure bool, wait time.Duration) {
	br := httpfast.Readers.Get().(*bufio.Reader)
	br.Reset(c)
	handOff, owned := false, false
	defer func() {
		switch {
		case handOff:
			q.HandOff(c, br)
		case !owned:
			c.Close()
		}
		br.Reset(nil)
		httpfast.Readers.Put(br)
	}()
	if !r.fastConns.Add(c) {
		return // shutting down
	}
	defer r.fastConns.Remove(c)
	remote := c.RemoteAddr().String()
	clientIP, _, _ := net.SplitHostPort(remote)
	trusted := r.trusted(clientIP)
	// Between requests a connection may idle for the idle timeout. The
	// deadline moves only when it must (httpfast.Deadline).
	var dl httpfast.Deadline
	for {
		dl.Within(c, wait)
		wait = r.o.IdleTimeout
		if r.fastConns.Closing() {
			return
		}
		// Between requests, the other connections' work goes first: by
		// the time this one reads, its client has usually sent the next
		// request, and the read finds it instead of returning EAGAIN and
		// parking on the poller (bench/router, HTTP/1.1 keep-alive, 64
		// connections: CPU per request -8 to -20%, requests/s +30 to
		// +50%, p99 2.6 -> 1.7-2.0 ms). With nothing else to run it
		// returns at once. (Yielding before the gear's response too
		// cost the tail: p99 3-7 ms.)
		if br.Buffered() == 0 {
			runtime.Gosched()
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		var req httpfast.Request
		err := req.ParseBuffered(br, false)
		if err == httpfast.ErrIncomplete { // the rest must come within the header timeout
			dl.Within(c, r.o.HeaderTimeout)
			err = req.Parse(br, false)
		}
		if err == httpfast.ErrHandOff {
			handOff = true
			return
		}
		if err != nil {
			return
		}
		host := hostOnly(string(req.Host))
		if !r.takesFast(&req, host, secure) {
			handOff = true
			return
		}
		br.Discard(len(req.Head)) // the fast path takes this request
		if req.ContentLength > 0 {
			dl.None(c) // the body may take its time
		}
		keep, err := r.proxyFast(c, br, &req, host, clientIP, remote, trusted, secure)
		if err == errTunnelOwned {
			owned = true
			return
		}
		if err != nil || !keep {
			return
		}
		if ls := r.loops.Load(); !secure && br.Buffered() == 0 && ls != nil && ls.adopt(c, remote, clientIP, trusted) {
			owned = true
			return
		}
	}
}

var acmeChallenge = []byte("/.well-known/acme-challenge/")

// takesFast says whether the fast path serves req, for host (otherwise
// net/http does: the platform's host, redirects, pages, idle apps, ACME
// challenges).
func (r *Router) takesFast(req *httpfast.Request, host string, secure bool) bool {
	if r.platform[host] {
		return false
	}
	rt := r.table.Load().Lookup(host)
	return rt != nil && rt.RedirectTo == "" && len(rt.Endpoints) > 0 &&
		!(!secure && rt.HTTPS == HTTPSRedirect && r.tlsLn != nil) && !(secure && rt.HTTPS == HTTPSOff) &&
		!(r.o.ACME != nil && bytes.HasPrefix(req.Target, acmeChallenge))
}

func (r *Router) dialBackend(ep string, rt *Route) (*httpfast.Conn, error) {
	d := r.o.DialTimeout
	if rt.ConnectTimeout > 0 {
		d = rt.ConnectTimeout
	}
	c, err := net.DialTimeout("tcp", ep, d)
	if err != nil {
		r.markDown(ep, err)
		return nil, &dialError{err}
	}
	return httpfast.NewConn(c), nil
}

// flight is a request of the fast path on its way to a gear and back:
// what is counted and logged of it when its answer is through.
type flight struct {
	rt    *Route
	ep    string
	cnt   *atomic.Int64 // the gear's open requests (pick)
	st    *appStats
	entry *accessEntry
	start time.Time
}

// land ends the flight's counts.
func (f *flight) land() {
	f.cnt.Add(-1)
	f.st.end()
}

// proxyFast sends one parsed request to a gear and its response back. It
// reports whether the client connection may serve another request.
func (r *Router) proxyFast(c net.Conn, cbr *bufio.Reader, req *httpfast.Request, host, clientIP, remote string, trusted, secure bool) (bool, error) {
	f := flight{start: time.Now()}
	f.rt, f.ep, f.cnt = r.pick(host)
	if f.ep == "" {
		// The route lost its gears meanwhile: answer as net/http would.
		var st *appStats
		if f.rt != nil {
			st = f.rt.stats
		}
		r.obs.rawPage(c, st, f.start, nil, 503, "App not running", "The app at "+host+" has no running gears right now.")
		return false, nil
	}
	f.st = f.rt.stats
	f.st.begin()
	defer f.land() // the gear finally used

	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	proto, extra := "http", []byte(nil)
	if secure {
		proto, extra = "https", r.altSvcHeader
	}
	out := r.requestHead((*hb)[:0], req, clientIP, proto, trusted)
	*hb = out
	f.entry = r.fastEntry(f.st, req, remote)

	var resp httpfast.Response
	bc, err := r.exchange(&f, host, out, cbr, req, &resp)
	return r.answer(c, cbr, bc, &resp, req, err, host, &f, extra)
}

// pickAnother moves f to another gear of host than the one that refused
// it, with the counts; false: there is none.
func (r *Router) pickAnother(f *flight, host string) bool {
	rt, ep, cnt := r.pick(host)
	if ep == "" || ep == f.ep {
		if cnt != nil {
			cnt.Add(-1)
		}
		return false
	}
	f.cnt.Add(-1)
	f.rt, f.ep, f.cnt = rt, ep, cnt
	return true
}

// exchange sends the request (head out, the body from cbr) to f's gear
// on a pooled connection and reads the response head into resp. A gear
// that refuses the connection is marked down and another one tried.
func (r *Router) exchange(f *flight, host string, out []byte, cbr *bufio.Reader, req *httpfast.Request, resp *httpfast.Response) (*httpfast.Conn, error) {
	bc, err := r.pool.Exchange(f.ep, func() (*httpfast.Conn, error) { return r.dialBackend(f.ep, f.rt) }, out, cbr, req, resp, f.rt.ReadTimeout)
	for tries := 1; err != nil && isDialError(err) && tries < 3; tries++ {
		// Nothing was sent: another gear may take the request.
		if !r.pickAnother(f, host) {
			break
		}
		*resp = httpfast.Response{}
		bc, err = r.pool.Exchange(f.ep, func() (*httpfast.Conn, error) { return r.dialBackend(f.ep, f.rt) }, out, cbr, req, resp, f.rt.ReadTimeout)
	}
	return bc, err
}

// fastEntry is the access entry of req, or nil when nothing takes it.
func (r *Router) fastEntry(st *appStats, req *httpfast.Request, remote string) *accessEntry {
	e := r.obs.entry(st)
	if e != nil { // the head's bytes are not kept past the body
		e.host, e.method, e.path, e.proto, e.remote = string(req.Host), string(req.Method), httpfast.PathOf(req.Target), "HTTP/1.1", remote
	}
	return e
}

// answer sends the gear's response to req (or the page saying why there
// is none: err) back to the client and records the request. It reports
// whether the client connection may serve another request.
func (r *Router) answer(c net.Conn, cbr *bufio.Reader, bc *httpfast.Conn, resp *httpfast.Response, req *httpfast.Request, err error, host string, f *flight, extra []byte) (bool, error) {
	if err != nil {
		status, title, msg := r.gearFailed(err, host, f)
		r.obs.rawPage(c, f.st, f.start, f.entry, status, title, msg)
		return false, nil
	}
	if resp.Status == http.StatusSwitchingProtocols {
		return false, r.tunnelFast(c, cbr, bc, resp, f.rt, f.st, f.entry, f.start, f.ep)
	}
	keep, n, err := httpfast.SendResponse(c, bc, resp, req, extra)
	if req.Upgrade != nil {
		resp.Reusable = false
	}
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.pool.Put(f.ep, bc)
	}
	r.obs.recordEntry(f.st, f.entry, f.start, resp.Status, req.ContentLength, n, f.ep)
	return keep && err == nil, err
}

// gearFailed logs why a gear gave no response and says what the client
// is told.
func (r *Router) gearFailed(err error, host string, f *flight) (status int, title, msg string) {
	status = 502
	if errors.Is(err, errReadTimeout) {
		status = 504
	}
	if r.logLimit.allow() {
		r.log.Warn("proxy error", "host", host, "gear", f.ep, "err", err)
	}
	if status == 504 {
		return status, "App too slow", "The app at " + host + " did not start its answer within " + f.rt.ReadTimeout.String() + "."
	}
	return status, "App not responding", "The app at " + host + " did not answer. Its owner can look at `gantry logs`."
}

// finishFast takes over a request from an event loop once it has gone
// to the gear (gear; its response not read, or not all): it reads and
// sends the response as proxyFast would, then serves the client on.
func (r *Router) finishFast(c, gear net.Conn, req httpfast.Request, host string, f flight, q *httpfast.ConnQueue) {
	defer f.land()
	bc := httpfast.NewConn(gear)
	var resp httpfast.Response
	err := bc.ReadResponse(&req, &resp, f.rt.ReadTimeout)
	if err != nil {
		bc.Drop()
	}
	keep, err := r.answer(c, nil, bc, &resp, &req, err, host, &f, nil)
	if err != nil || !keep {
		c.Close()
		return
	}
	r.serveFastOn(c, q, false, r.o.IdleTimeout)
}

// requestHead renders the head sent to the gear.
func (r *Router) requestHead(out []byte, req *httpfast.Request, clientIP, proto string, trusted bool) []byte {
	out = append(out, req.Method...)
	out = append(out, ' ')
	out = append(out, req.Target...)
	out = append(out, " HTTP/1.1\r\n"...)
	for _, h := range req.Headers {
		out = append(out, req.Head[h[0]:h[1]]...)
	}
	if trusted { // Forwarded and X-Real-IP as the proxy we trust sent them
		for _, h := range req.FromProxy {
			out = append(out, req.Head[h[0]:h[1]]...)
		}
	}
	if !trusted || req.XRealIP == nil {
		out = append(out, "X-Real-IP: "...)
		out = append(out, clientIP...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "X-Forwarded-For: "...)
	if trusted && req.XFF != nil {
		out = append(out, req.XFF...)
		out = append(out, ", "...)
	}
	out = append(out, clientIP...)
	out = append(out, "\r\nX-Forwarded-Host: "...)
	if trusted && req.XFH != nil {
		out = append(out, req.XFH...)
	} else {
		out = append(out, req.Host...)
	}
	out = append(out, "\r\nX-Forwarded-Proto: "...)
	if trusted && req.XFP != nil {
		out = append(out, req.XFP...)
	} else {
		out = append(out, proto...)
	}
	if req.Upgrade != nil {
		out = append(out, "\r\nConnection: Upgrade\r\nUpgrade: "...)
		out = append(out, req.Upgrade...)
	}
	out = append(out, "\r\n\r\n"...)
	return out
}
