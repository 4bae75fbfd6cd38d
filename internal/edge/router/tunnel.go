package router

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// tunnelFast relays an upgraded connection (a WebSocket) between client and
// gear after the gear's 101. An idle tunnel holds neither a buffer nor a
// goroutine: each direction waits for its socket in the netpoller for a
// moment, then parks it in the shared poller (parked.go), which starts
// the direction again when a byte arrives; only then does it borrow a
// copy buffer. It closes after the tunnel timeout without traffic either
// way.
func (r *Router) tunnelFast(c net.Conn, cbr *bufio.Reader, bc *httpfast.Conn, resp *httpfast.Response, rt *Route, st *appStats, entry *accessEntry, start time.Time, ep string) error {
	headLen := resp.InReader()
	if _, err := c.Write(resp.Head); err != nil {
		bc.Drop()
		return err
	}
	bc.BR.Discard(headLen)
	idle := r.o.TunnelTimeout
	if rt.TunnelTimeout > 0 {
		idle = rt.TunnelTimeout
	}
	// Bytes either side sent along with the handshake go first.
	var in, out int64
	if n := cbr.Buffered(); n > 0 {
		b, _ := cbr.Peek(n)
		if _, err := bc.Conn.Write(b); err != nil {
			bc.Drop()
			return err
		}
		cbr.Discard(n)
		in += int64(n)
	}
	if n := bc.BR.Buffered(); n > 0 {
		b, _ := bc.BR.Peek(n)
		if _, err := c.Write(b); err != nil {
			bc.Drop()
			return err
		}
		bc.BR.Discard(n)
		out += int64(n)
	}
	st.websockets.Inc()
	backend := bc.Conn
	bc.BR.Reset(nil)
	httpfast.Readers.Put(bc.BR)
	st.begin()
	cnt := rt.countOf(ep)
	cnt.Add(1)
	t := newTunnel(c, backend, idle, func(fwd, back int64) {
		cnt.Add(-1)
		st.end()
		st.websockets.Dec()
		r.obs.recordEntry(st, entry, start, http.StatusSwitchingProtocols, in+fwd, out+back, ep)
	})
	t.run()
	return errTunnelOwned
}

// errTunnelOwned says the connection now belongs to a tunnel's goroutines.
var errTunnelOwned = errors.New("connection taken by a tunnel")

// tunnel is a spliced pair of connections: two halves, each copying one
// way. The half that ends last closes both and reports the bytes.
type tunnel struct {
	idle    time.Duration
	last    atomic.Int64 // unix nanoseconds of the last byte either way
	halves  [2]half      // a to b, b to a
	left    atomic.Int32
	ended   bool // both closed (guarded by the poller's lock)
	closed  sync.Once
	a, b    net.Conn
	finally func(ab, ba int64)
}

// half copies src to dst.
type half struct {
	t        *tunnel
	dst, src net.Conn
	raw      syscall.RawConn // nil for a TLS source: it is read directly
	n        int64
	id       uint32 // its key while parked (0: not parked)
}

func newTunnel(a, b net.Conn, idle time.Duration, finally func(ab, ba int64)) *tunnel {
	t := &tunnel{idle: idle, a: a, b: b, finally: finally}
	t.touch()
	t.left.Store(2)
	t.halves[0] = half{t: t, dst: b, src: a}
	t.halves[1] = half{t: t, dst: a, src: b}
	for i := range t.halves {
		h := &t.halves[i]
		if sc, ok := h.src.(syscall.Conn); ok {
			h.raw, _ = sc.SyscallConn()
		}
	}
	return t
}

// run starts both halves, each in a goroutine of its own (small stacks:
// the request's goroutine, grown by parsing and proxying, ends).
func (t *tunnel) run() {
	go t.halves[0].run()
	go t.halves[1].run()
}

func (t *tunnel) touch() { t.last.Store(time.Now().UnixNano()) }

// idleFor is how long neither half carried a byte.
func (t *tunnel) idleFor() time.Duration { return time.Since(time.Unix(0, t.last.Load())) }

// end closes both connections; a parked half is finished here (the
// first call does it; finish may call end again).
func (t *tunnel) end() {
	first := false
	t.closed.Do(func() {
		first = true
		t.a.Close()
		t.b.Close()
	})
	if !first {
		return
	}
	for _, h := range parking.ended(t) {
		h.finish()
	}
}

// finish counts a half done; the last one reports.
func (h *half) finish() {
	t := h.t
	if t.left.Add(-1) > 0 {
		return
	}
	t.end()
	t.finally(t.halves[0].n, t.halves[1].n)
}

// parkAfter is how long a quiet half waits in the netpoller (a goroutine
// and its stack) before it is parked in the shared poller (neither).
const parkAfter = 20 * time.Millisecond

// run copies until the source ends (then half-closes the destination),
// fails, or the tunnel idles (then closes both), or parks the half.
func (h *half) run() {
	t := h.t
	for {
		if h.raw != nil {
			wait := min(parkAfter, t.idle-t.idleFor())
			h.src.SetReadDeadline(time.Now().Add(max(wait, 0)))
			if err := waitReadable(h.raw); err != nil {
				var ne net.Error
				switch {
				case !errors.As(err, &ne) || !ne.Timeout() || t.idleFor() >= t.idle:
					t.end()
					h.finish()
					return
				case parking.park(h):
					return // the poller runs it again
				}
				continue
			}
		}
		h.src.SetReadDeadline(time.Unix(0, t.last.Load()).Add(t.idle))
		bp := copyBufs.Get().(*[]byte)
		for {
			m, rerr := h.src.Read(*bp)
			if m > 0 {
				t.touch()
				h.n += int64(m)
				if _, werr := h.dst.Write((*bp)[:m]); werr != nil {
					copyBufs.Put(bp)
					t.end()
					h.finish()
					return
				}
			}
			if rerr != nil {
				var ne net.Error
				if errors.As(rerr, &ne) && ne.Timeout() && t.idleFor() < t.idle {
					break // the other direction was busy: not idle
				}
				copyBufs.Put(bp)
				if cw, ok := h.dst.(interface{ CloseWrite() error }); ok && isEOF(rerr) && cw.CloseWrite() == nil {
					h.finish()
					return
				}
				t.end()
				h.finish()
				return
			}
			if m < len(*bp) {
				break // drained for now: give the buffer back while waiting
			}
		}
		copyBufs.Put(bp)
	}
}

// waitReadable blocks until the socket has data or an end, without
// reading: a one-byte MSG_PEEK that waits in the netpoller on EAGAIN.
func waitReadable(raw syscall.RawConn) error {
	var one [1]byte
	var opErr error
	err := raw.Read(func(fd uintptr) bool {
		_, _, e := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if e == syscall.EAGAIN {
			return false
		}
		if e != nil && e != syscall.EINTR {
			opErr = e
		}
		return true
	})
	if err != nil {
		return err
	}
	return opErr
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF)
}
