package router

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// The HTTP proxy's fast path: plain HTTP/1.1 requests with absolute
// http:// URLs that the app's ACL allows are parsed in place and sent over
// pooled connections to the destination with one write, as the router
// does for gears (httpfast). Everything else (CONNECT, denials, unknown
// sources, chunked request bodies, upgrades, HTTP/1.0, anything unusual)
// is handed, with the bytes already read, to the net/http server at a
// request boundary, which answers it as before. Both paths log and count
// alike.

const (
	proxyIdleTimeout   = 2 * time.Minute
	proxyHeaderTimeout = 10 * time.Second
)

// acceptProxy serves the proxy port: each connection starts on the fast
// path.
func (r *Router) acceptProxy(ln net.Listener, q *httpfast.ConnQueue) {
	defer q.Close()
	r.accept(ln, func(c net.Conn) { r.serveProxyConn(c, q) })
}

func (r *Router) serveProxyConn(c net.Conn, q *httpfast.ConnQueue) {
	br := httpfast.Readers.Get().(*bufio.Reader)
	br.Reset(c)
	handOff := false
	defer func() {
		if handOff {
			q.HandOff(c, br)
		} else {
			c.Close()
		}
		br.Reset(nil)
		httpfast.Readers.Put(br)
	}()
	if !r.fastConns.Add(c) {
		return // shutting down
	}
	defer r.fastConns.Remove(c)
	src := addrOf(c.RemoteAddr())
	var dl httpfast.Deadline   // moved only when it must
	wait := proxyHeaderTimeout // a new connection's first byte; then idle
	for {
		dl.Within(c, wait)
		wait = proxyIdleTimeout
		if r.fastConns.Closing() {
			return
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		app := r.appOf(src) // for each request: the configuration may change
		if app == nil || !app.Proxy {
			handOff = true
			return
		}
		var req httpfast.Request
		err := req.ParseBuffered(br, true)
		if err == httpfast.ErrIncomplete {
			dl.Within(c, proxyHeaderTimeout)
			err = req.Parse(br, true)
		}
		if err != nil {
			handOff = err == httpfast.ErrHandOff
			return
		}
		host, port, ok := splitAuthority(req.Authority)
		if !ok || req.Upgrade != nil {
			handOff = true
			return
		}
		if ok, _ := app.ACL.Allows(host, port); !ok {
			handOff = true // net/http explains the denial
			return
		}
		br.Discard(len(req.Head))
		if req.ContentLength > 0 {
			dl.None(c) // the body may take its time
		}
		if !r.forwardFast(c, br, &req, app, src, host, port) {
			return
		}
	}
}

// splitAuthority reads host[:port] of an http:// URL (port 80 when
// none), lower-casing the host as the ACL expects.
func splitAuthority(a []byte) (string, uint16, bool) {
	host, port := string(a), uint16(80)
	if i := lastColon(a); i >= 0 {
		n, err := strconv.Atoi(string(a[i+1:]))
		if err != nil || n < 1 || n > 65535 {
			return "", 0, false
		}
		host, port = string(a[:i]), uint16(n)
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil {
			return "", 0, false
		}
		host = ip.String()
	}
	if host == "" {
		return "", 0, false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			b := []byte(host)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			host = string(b)
			break
		}
	}
	return host, port, true
}

// lastColon is the index of the port's colon (-1: none), outside an IPv6
// literal's brackets.
func lastColon(a []byte) int {
	for i := len(a) - 1; i >= 0; i-- {
		switch a[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

// forwardFast sends one request to its destination and the response
// back; it reports whether the client connection may carry another.
func (r *Router) forwardFast(c net.Conn, cbr *bufio.Reader, req *httpfast.Request, app *App, src netip.Addr, host string, port uint16) bool {
	e := entry{mode: "proxy", app: app.Name, gear: src, start: time.Now(), method: string(req.Method), dest: net.JoinHostPort(host, strconv.Itoa(int(port)))}
	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	out := append((*hb)[:0], req.Method...)
	out = append(out, ' ')
	out = append(out, req.Target...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, req.Authority...)
	out = append(out, "\r\n"...)
	for _, h := range req.Headers {
		out = append(out, req.Head[h[0]:h[1]]...)
	}
	out = append(out, "\r\n"...)
	*hb = out

	var resp httpfast.Response
	bc, err := r.upstreams.Exchange(e.dest, func() (*httpfast.Conn, error) {
		up, err := r.dialer.Dial("tcp", e.dest)
		if err != nil {
			return nil, err
		}
		return httpfast.NewConn(up), nil
	}, out, cbr, req, &resp, 0)
	if err != nil {
		e.result, e.status, e.err = "failed", 502, err
		r.obs.record(&e)
		msg := "gantry egress router: " + err.Error() + "\n"
		c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: " +
			strconv.Itoa(len(msg)) + "\r\n\r\n" + msg))
		return false
	}
	keep, n, err := httpfast.SendResponse(c, bc, &resp, req, nil)
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.upstreams.Put(e.dest, bc)
	}
	e.result, e.status, e.out, e.in = "ok", resp.Status, req.ContentLength, n
	if err != nil && !errors.Is(err, net.ErrClosed) {
		e.err = err
	}
	r.obs.record(&e)
	return keep && err == nil
}
