package router

import (
	"crypto/tls"
	"errors"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/gantry-paas/gantry/internal/edge/connguard"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens a stream and resets
// it at once, again and again; each costs the server a request and a
// handler, none counts against the stream limit, and twenty such
// connections grew the router's memory tenfold. The router serves h2
// itself (x/net/http2 on the TLS connection net/http hands over) through a
// reader that follows the frames the client sends and cuts a connection
// that resets more than h2ResetLimit streams within a second; the cut is
// counted (gantry_router_connections_refused_total{reason="h2-rapid-reset"})
// and logged, and the client's address waits out a penalty before it may
// connect again. Browsers reset a few streams when a page is left, never
// hundreds a second.

const h2ResetLimit = 100

// h2Penalty is how long a client cut for a rapid reset has its new
// connections refused (trusted proxies excepted): reconnecting at once
// would start the flood again.
const h2Penalty = 10 * time.Second

var errRapidReset = errors.New("too many streams reset by the client: HTTP/2 rapid reset")

// h2Conn is a TLS connection whose client-to-server frames are counted.
type h2Conn struct {
	*tls.Conn
	preface int     // bytes of the client preface still to skip
	hdr     [9]byte // the frame header being read
	hn      int
	skip    int // payload bytes of the current frame still to skip
	resets  int
	window  time.Time
	abuse   func()
	cut     bool
	w       h2Writer // the connection's writes, batched (h2write.go)
}

func (c *h2Conn) Write(p []byte) (int, error) { return c.w.Write(p) }

// Close sends what is queued first (a GOAWAY, the last frames), for at
// most a second.
func (c *h2Conn) Close() error {
	c.w.drain(time.Second, func() { c.Conn.SetWriteDeadline(time.Now()) })
	return c.Conn.Close()
}

func (c *h2Conn) Read(p []byte) (int, error) {
	if c.cut {
		return 0, errRapidReset
	}
	n, err := c.Conn.Read(p)
	if c.scan(p[:n]) {
		c.cut = true
		c.abuse()
		return 0, errRapidReset
	}
	return n, err
}

// scan follows frame boundaries in b; it reports an abusive client.
func (c *h2Conn) scan(b []byte) bool {
	if c.preface > 0 {
		k := min(c.preface, len(b))
		c.preface -= k
		b = b[k:]
	}
	for len(b) > 0 {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			continue
		}
		k := copy(c.hdr[c.hn:], b)
		c.hn += k
		b = b[k:]
		if c.hn < len(c.hdr) {
			return false
		}
		c.hn = 0
		c.skip = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		if http2.FrameType(c.hdr[3]) == http2.FrameRSTStream {
			now := time.Now()
			if now.Sub(c.window) > time.Second {
				c.window, c.resets = now, 0
			}
			if c.resets++; c.resets > h2ResetLimit {
				return true
			}
		}
	}
	return false
}

// serveH2 serves one h2 connection net/http negotiated.
func (r *Router) serveH2(s *http.Server, c *tls.Conn, h http.Handler) {
	gc := &h2Conn{Conn: c, preface: len(http2.ClientPreface), abuse: func() {
		r.obs.refused.WithLabelValues("https", "h2-rapid-reset").Inc()
		r.guard.Penalize(connguard.AddrOf(c.RemoteAddr()), h2Penalty)
		if r.logLimit.allow() {
			r.log.Warn("HTTP/2 connection cut: the client reset too many streams (rapid reset)", "client", c.RemoteAddr().String(), "limit_per_second", h2ResetLimit)
		}
	}}
	gc.w.init(c.Write)
	r.h2.ServeConn(gc, &http2.ServeConnOpts{BaseConfig: s, Handler: h})
}
