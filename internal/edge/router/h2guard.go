package router

import (
	"net"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/connguard"
	"github.com/gantry-paas/gantry/internal/edge/h2"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens a stream and resets
// it at once, again and again; each costs the server a request and a
// handler, none counts against the stream limit, and twenty such
// connections grew the router's memory tenfold. The router's h2 server
// cuts a connection that resets more than h2ResetLimit streams within a
// second; the cut is counted
// (gantry_router_connections_refused_total{reason="h2-rapid-reset"}) and
// logged, and the client's address waits out a penalty before it may
// connect again. Browsers reset a few streams when a page is left, never
// hundreds a second.

const h2ResetLimit = 100

// h2Penalty is how long a client cut for a rapid reset has its new
// connections refused (trusted proxies excepted): reconnecting at once
// would start the flood again.
const h2Penalty = 10 * time.Second

// newH2 makes the router's HTTP/2 server.
func (r *Router) newH2() *h2.Server {
	return &h2.Server{
		Handler:              r,
		Direct:               r.serveH2Direct,
		MaxConcurrentStreams: 250,
		IdleTimeout:          r.o.IdleTimeout,
		MaxHeaderBytes:       r.o.MaxHeaderBytes,
		ResetLimit:           h2ResetLimit,
		Log:                  r.log,
		OnAbuse: func(c net.Conn) {
			r.obs.refused.WithLabelValues("https", "h2-rapid-reset").Inc()
			r.guard.Penalize(connguard.AddrOf(c.RemoteAddr()), h2Penalty)
			if r.logLimit.allow() {
				r.log.Warn("HTTP/2 connection cut: the client reset too many streams (rapid reset)", "client", c.RemoteAddr().String(), "limit_per_second", h2ResetLimit)
			}
		},
	}
}
