// Package connguard owns the accept loops of Gantry's public listeners
// (the router's HTTP, HTTPS and TCP-route ports, the egress router's
// ports) and what protects them from a flood: an accept loop that backs
// off and goes on after any error but the listener's close ("too many open
// files" included), and a cap on the connections one source address holds
// at once (a client of the router, a gear at the egress router), with a
// counter and a rate-limited log line for every refusal.
//
// It must not read or write the connections it guards: the serve function
// owns each one, and its Close gives the source's slot back.
package connguard

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Guard.
type Options struct {
	// Name labels the guard's log lines and metrics ("http", "egress-proxy").
	Name string
	// PerSource caps the connections one source address holds open at
	// once; 0: no cap.
	PerSource int
	// Exempt, if set, lifts the cap for a source (trusted proxies).
	Exempt func(netip.Addr) bool
	Log    *slog.Logger
	// Refused counts refusals by listener and reason; nil: not counted.
	Refused *prometheus.CounterVec
}

// Guard is shared by the listeners of one role; it is safe for concurrent
// use.
type Guard struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	per     map[netip.Addr]int
	penalty map[netip.Addr]time.Time // refused until then

	refused  atomic.Int64
	lastLog  atomic.Int64 // unix nanoseconds of the last refusal log line
	lastFail atomic.Int64 // of the last accept error log line
}

// NewRefusedCounter is the counter a role registers for its guards.
func NewRefusedCounter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"listener", "reason"})
}

// New makes a guard.
func New(o Options) *Guard {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Guard{o: o, log: o.Log.With("guard", o.Name), per: map[netip.Addr]int{}, penalty: map[netip.Addr]time.Time{}}
}

// Refused is how many connections the guard refused so far.
func (g *Guard) Refused() int64 { return g.refused.Load() }

// Open is how many connections src holds now.
func (g *Guard) Open(src netip.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.per[src.Unmap()]
}

// Serve accepts on ln until it is closed, handing each admitted connection
// to serve in its own goroutine. Accept errors (descriptors exhausted,
// aborted handshakes) are logged and retried after a back-off of 5 ms
// doubling to 1 s, as net/http does, so a flood delays the listener but
// never stops it. It returns nil once ln is closed.
func (g *Guard) Serve(ln net.Listener, listener string, serve func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			g.acceptFailed(listener, err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if gc, ok := g.Admit(c, listener); ok {
			go serve(gc)
		}
	}
}

// Admit counts c against its source and returns it wrapped so that its
// Close gives the slot back; over the cap it closes c (with a reset, so no
// descriptor lingers in TIME_WAIT) and reports false.
func (g *Guard) Admit(c net.Conn, listener string) (net.Conn, bool) {
	src := AddrOf(c.RemoteAddr())
	if g.o.Exempt != nil && g.o.Exempt(src) {
		return c, true
	}
	g.mu.Lock()
	if until, ok := g.penalty[src]; ok {
		if time.Now().Before(until) {
			g.mu.Unlock()
			g.reset(c)
			g.refuse(listener, "penalty", src)
			return nil, false
		}
		delete(g.penalty, src)
	}
	if g.o.PerSource <= 0 {
		g.mu.Unlock()
		return c, true
	}
	n := g.per[src]
	if n >= g.o.PerSource {
		g.mu.Unlock()
		g.reset(c)
		g.refuse(listener, "per-source", src)
		return nil, false
	}
	g.per[src] = n + 1
	g.mu.Unlock()
	release := func() {
		g.mu.Lock()
		if g.per[src]--; g.per[src] <= 0 {
			delete(g.per, src)
		}
		g.mu.Unlock()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &Conn{TCPConn: tc, release: release}, true
	}
	return &otherConn{Conn: c, release: release}, true
}

// Penalize refuses every new connection from src for d (a client caught
// abusing a protocol, e.g. an HTTP/2 rapid reset); exempt sources are
// never penalized.
func (g *Guard) Penalize(src netip.Addr, d time.Duration) {
	src = src.Unmap()
	if g.o.Exempt != nil && g.o.Exempt(src) {
		return
	}
	g.mu.Lock()
	g.penalty[src] = time.Now().Add(d)
	if len(g.penalty) > 100000 { // bounded: forget the expired ones
		now := time.Now()
		for a, t := range g.penalty {
			if now.After(t) {
				delete(g.penalty, a)
			}
		}
	}
	g.mu.Unlock()
}

// reset closes c with a reset, so no descriptor lingers in TIME_WAIT.
func (g *Guard) reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (g *Guard) refuse(listener, reason string, src netip.Addr) {
	g.refused.Add(1)
	if g.o.Refused != nil {
		g.o.Refused.WithLabelValues(listener, reason).Inc()
	}
	if g.every(&g.lastLog, 10*time.Second) {
		why := "too many open connections from one address"
		if reason == "penalty" {
			why = "the address abused a protocol and waits out its penalty"
		}
		g.log.Warn("connection refused: "+why, "listener", listener, "reason", reason,
			"source", src.String(), "limit", g.o.PerSource, "refused_total", g.refused.Load())
	}
}

func (g *Guard) acceptFailed(listener string, err error, delay time.Duration) {
	if g.o.Refused != nil {
		reason := "accept-error"
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			reason = "descriptors"
		}
		g.o.Refused.WithLabelValues(listener, reason).Inc()
	}
	if g.every(&g.lastFail, 5*time.Second) {
		g.log.Error("accepting a connection failed; retrying", "listener", listener, "err", err, "retry_in", delay)
	}
}

// every reports whether at least d passed since *last, and if so moves it.
func (g *Guard) every(last *atomic.Int64, d time.Duration) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(d) && last.CompareAndSwap(prev, now)
}

// Conn is an admitted TCP connection. It keeps *net.TCPConn's methods
// (CloseWrite, SyscallConn, splice through ReadFrom/WriteTo, also between
// two guarded connections) and gives its source's slot back on Close.
type Conn struct {
	*net.TCPConn
	release func()
	once    sync.Once
}

// Close closes the connection and frees its slot.
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom splices from a TCP source, guarded or not.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.TCPConn.ReadFrom(Unwrap(r)) }

// WriteTo splices to a TCP destination, guarded or not.
func (c *Conn) WriteTo(w io.Writer) (int64, error) { return c.TCPConn.WriteTo(Unwrap(w)) }

// Unwrap gives the *net.TCPConn under a guarded connection (anything else
// as it is), for code that must see the TCP connection itself.
func Unwrap[T any](x T) T {
	if c, ok := any(x).(*Conn); ok {
		if t, ok := any(c.TCPConn).(T); ok {
			return t
		}
	}
	return x
}

type otherConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *otherConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// AddrOf is the (unmapped) IP address of a connection's address.
func AddrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}
