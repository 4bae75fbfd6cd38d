package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/health"
	"github.com/gantry-paas/gantry/internal/handoff"
)

// tcpRoutes holds the platform-port listeners of TCP routes and the health
// of their members. Listeners follow the table: a route's port is bound
// when it appears and closed when it goes (open connections stay).
type tcpRoutes struct {
	mu        sync.Mutex
	listeners map[int]net.Listener
	errs      map[int]error // why a port could not be bound
	healthMu  sync.Mutex
	health    map[string]*health.State
	rr        atomic.Uint64
}

func (t *tcpRoutes) init() {
	t.listeners = map[int]net.Listener{}
	t.errs = map[int]error{}
	t.health = map[string]*health.State{}
}

func (t *tcpRoutes) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, ln := range t.listeners {
		ln.Close()
		delete(t.listeners, p)
	}
}

// tcpHost is the address TCP routes listen on: the router's own (all
// interfaces when it listens on all of them).
func (r *Router) tcpHost() string {
	if a, ok := r.ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		return a.IP.String()
	}
	return ""
}

// syncTCP binds the ports of new TCP routes and closes those of removed
// ones.
func (r *Router) syncTCP(tb *Table) {
	r.tcp.mu.Lock()
	defer r.tcp.mu.Unlock()
	for port, ln := range r.tcp.listeners {
		if tb.TCP[port] == nil {
			ln.Close()
			delete(r.tcp.listeners, port)
		}
	}
	for port := range r.tcp.errs {
		if tb.TCP[port] == nil {
			delete(r.tcp.errs, port)
		}
	}
	for port, tr := range tb.TCP {
		if r.tcp.listeners[port] != nil {
			continue
		}
		ln, err := handoff.ListenShared(net.ListenConfig{}, "tcp", net.JoinHostPort(r.tcpHost(), strconv.Itoa(port)))
		if err != nil {
			if r.tcp.errs[port] == nil {
				r.log.Error("binding TCP route", "app", tr.App, "port", port, "err", err)
			}
			r.tcp.errs[port] = err
			continue
		}
		delete(r.tcp.errs, port)
		r.tcp.listeners[port] = ln
		go r.acceptTCP(ln, port)
	}
	r.tcp.healthMu.Lock()
	live := map[string]bool{}
	for _, m := range allMembers(tb) {
		live[m] = true
		if r.tcp.health[m] == nil {
			r.tcp.health[m] = &health.State{}
		}
	}
	for m := range r.tcp.health {
		if !live[m] {
			delete(r.tcp.health, m)
		}
	}
	r.tcp.healthMu.Unlock()
}

// allMembers lists the members of all TCP routes, each once.
func allMembers(tb *Table) []string {
	seen := map[string]bool{}
	var out []string
	add := func(ms []string) {
		for _, m := range ms {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	for _, tr := range tb.TCP {
		add(tr.Members)
	}
	for _, tr := range tb.SNI {
		add(tr.Members)
	}
	return out
}

// TCPPortError says why a TCP route's port is not served (nil if it is).
func (r *Router) TCPPortError(port int) error {
	r.tcp.mu.Lock()
	defer r.tcp.mu.Unlock()
	return r.tcp.errs[port]
}

// MemberHealthy reports whether a TCP route member passes its checks.
func (r *Router) MemberHealthy(member string) bool {
	h := r.healthOf(member)
	return h == nil || !h.Down()
}

func (r *Router) healthOf(member string) *health.State {
	r.tcp.healthMu.Lock()
	defer r.tcp.healthMu.Unlock()
	return r.tcp.health[member]
}

func (r *Router) acceptTCP(ln net.Listener, port int) {
	r.guard.Serve(ln, "tcp:"+strconv.Itoa(port), func(c net.Conn) { r.serveTCP(c, port, "") })
}

// serveTCP proxies one connection of a TCP route (by port, or by SNI for
// TLS passthrough) to a healthy member, round-robin, trying the next one
// when a dial fails.
func (r *Router) serveTCP(c net.Conn, port int, sni string) {
	start := time.Now()
	label := strconv.Itoa(port)
	lookup := func() *TCPRoute {
		if sni != "" {
			return r.table.Load().SNI[sni]
		}
		return r.table.Load().TCP[port]
	}
	if sni != "" {
		label = "sni:" + sni
	}
	tr := lookup()
	if tr == nil {
		c.Close()
		return
	}
	st := r.statsOf(tr.AppKey, tr.App)
	st.begin()
	defer st.end()
	if len(tr.Members) == 0 && tr.Idle && r.o.Waker != nil {
		tr = r.holdTCPForWake(tr, lookup)
	}
	backend, member, err := r.dialMember(tr)
	if err != nil {
		c.Close()
		r.obs.recordTCP(st, label, c.RemoteAddr().String(), start, 0, 0, "", err)
		return
	}
	idle := r.o.TunnelTimeout
	if tr.Tunnel > 0 {
		idle = tr.Tunnel
	}
	in, out := splice(newIdleConn(c, idle), newIdleConn(backend, idle))
	r.obs.recordTCP(st, label, c.RemoteAddr().String(), start, in, out, member, nil)
}

func (r *Router) holdTCPForWake(tr *TCPRoute, lookup func() *TCPRoute) *TCPRoute {
	r.o.Waker.Wake(tr.AppKey)
	deadline := time.NewTimer(r.o.WakeTimeout)
	defer deadline.Stop()
	for {
		r.appliedMu.Lock()
		ch := r.applied
		r.appliedMu.Unlock()
		if cur := lookup(); cur == nil || len(cur.Members) > 0 || !cur.Idle {
			if cur == nil {
				return tr
			}
			return cur
		}
		select {
		case <-ch:
		case <-deadline.C:
			return tr
		}
	}
}

var errNoMembers = errors.New("no healthy gear")

func (r *Router) dialMember(tr *TCPRoute) (net.Conn, string, error) {
	n := len(tr.Members)
	if n == 0 {
		return nil, "", errNoMembers
	}
	start := int(r.tcp.rr.Add(1))
	var lastErr error = errNoMembers
	// Healthy members first; if all are marked down, try them anyway.
	for pass := 0; pass < 2; pass++ {
		for i := range n {
			m := tr.Members[(start+i)%n]
			h := r.healthOf(m)
			if pass == 0 && h != nil && h.Down() {
				continue
			}
			c, err := net.DialTimeout("tcp", m, r.o.DialTimeout)
			if err == nil {
				return c, m, nil
			}
			lastErr = fmt.Errorf("dialling %s: %w", m, err)
			if h != nil {
				h.MarkDown() // passive check: the next connection skips it
			}
		}
	}
	return nil, "", lastErr
}

// healthLoop checks every TCP route member each interval until ctx ends.
func (r *Router) healthLoop(ctx context.Context) {
	timeout := min(r.o.HealthInterval, time.Second)
	health.Loop(ctx, r.o.HealthInterval, func() map[string]*health.State {
		states := map[string]*health.State{}
		for _, m := range allMembers(r.table.Load()) {
			if h := r.healthOf(m); h != nil {
				states[m] = h
			}
		}
		return states
	}, health.Connect(&net.Dialer{Timeout: timeout}), func(m string, up bool, err error) {
		if up {
			r.log.Info("TCP route member healthy again", "member", m)
		} else {
			r.log.Warn("TCP route member failed its checks; out of the pool", "member", m, "err", err)
		}
	})
}
