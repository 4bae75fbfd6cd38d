package router

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"runtime"
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
// gets the connection with the unread bytes. secure: c is a TLS
// connection of the HTTPS port.
func (r *Router) serveFast(c net.Conn, q *httpfast.ConnQueue, secure bool) {
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
	// A new connection must send its first byte within the header timeout;
	// between requests it may idle for the idle timeout.
	// The deadline moves only when it must (httpfast.Deadline).
	var dl httpfast.Deadline
	wait := r.o.HeaderTimeout
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
		if r.platform[host] {
			handOff = true
			return
		}
		rt := r.table.Load().Lookup(host)
		if rt == nil || rt.RedirectTo != "" || len(rt.Endpoints) == 0 ||
			!secure && rt.HTTPS == HTTPSRedirect && r.tlsLn != nil || secure && rt.HTTPS == HTTPSOff ||
			r.o.ACME != nil && bytes.HasPrefix(req.Target, []byte("/.well-known/acme-challenge/")) {
			handOff = true
			return
		}
		br.Discard(len(req.Head)) // the fast path takes this request
		if req.ContentLength > 0 {
			dl.None(c) // the body may take its time
		}
		keep, err := r.proxyFast(c, br, &req, rt, host, clientIP, remote, trusted, secure)
		if err == errTunnelOwned {
			owned = true
			return
		}
		if err != nil || !keep {
			return
		}
	}
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

// proxyFast sends one parsed request to a gear and its response back. It
// reports whether the client connection may serve another request.
func (r *Router) proxyFast(c net.Conn, cbr *bufio.Reader, req *httpfast.Request, rt *Route, host, clientIP, remote string, trusted, secure bool) (bool, error) {
	start := time.Now()
	rt2, ep, cnt := r.pick(host)
	if ep == "" {
		// The route lost its gears meanwhile: answer as net/http would.
		r.obs.rawPage(c, rt.stats, start, nil, 503, "App not running", "The app at "+host+" has no running gears right now.")
		return false, nil
	}
	defer func() { cnt.Add(-1) }() // the gear finally used
	st := rt2.stats
	st.begin()
	defer st.end()

	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	proto, extra := "http", []byte(nil)
	if secure {
		proto, extra = "https", r.altSvcHeader
	}
	out := r.requestHead((*hb)[:0], req, clientIP, proto, trusted)
	*hb = out
	entry := r.obs.entry(st)
	if entry != nil { // the head's bytes are not kept past the body
		entry.host, entry.method, entry.path, entry.proto, entry.remote = string(req.Host), string(req.Method), httpfast.PathOf(req.Target), "HTTP/1.1", remote
	}

	var resp httpfast.Response
	bc, err := r.pool.Exchange(ep, func() (*httpfast.Conn, error) { return r.dialBackend(ep, rt2) }, out, cbr, req, &resp, rt2.ReadTimeout)
	for tries := 1; err != nil && isDialError(err) && tries < 3; tries++ {
		// Nothing was sent: another gear may take the request.
		rt3, ep3, cnt3 := r.pick(host)
		if ep3 == "" || ep3 == ep {
			if cnt3 != nil {
				cnt3.Add(-1)
			}
			break
		}
		cnt.Add(-1)
		rt2, ep, cnt = rt3, ep3, cnt3
		resp = httpfast.Response{}
		bc, err = r.pool.Exchange(ep, func() (*httpfast.Conn, error) { return r.dialBackend(ep, rt2) }, out, cbr, req, &resp, rt2.ReadTimeout)
	}
	if err != nil {
		status := 502
		if errors.Is(err, errReadTimeout) {
			status = 504
		}
		if r.logLimit.allow() {
			r.log.Warn("proxy error", "host", host, "gear", ep, "err", err)
		}
		title, msg := "App not responding", "The app at "+host+" did not answer. Its owner can look at `gantry logs`."
		if status == 504 {
			title, msg = "App too slow", "The app at "+host+" did not start its answer within "+rt2.ReadTimeout.String()+"."
		}
		r.obs.rawPage(c, st, start, entry, status, title, msg)
		return false, nil
	}
	if resp.Status == http.StatusSwitchingProtocols {
		return false, r.tunnelFast(c, cbr, bc, &resp, rt2, st, entry, start, ep)
	}
	keep, n, err := httpfast.SendResponse(c, bc, &resp, req, extra)
	if req.Upgrade != nil {
		resp.Reusable = false
	}
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.pool.Put(ep, bc)
	}
	r.obs.recordEntry(st, entry, start, resp.Status, req.ContentLength, n, ep)
	return keep && err == nil, err
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
