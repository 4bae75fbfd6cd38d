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
// gear after the gear's 101. An idle tunnel holds no buffer: each
// direction waits for its socket to be readable (a one-byte MSG_PEEK) and
// only then borrows a copy buffer. It closes after the tunnel timeout
// without traffic either way.
func (r *Router) tunnelFast(c net.Conn, cbr *bufio.Reader, bc *httpfast.Conn, resp *httpfast.Response, rt *Route, st *appStats, entry *accessEntry, start time.Time, ep string) error {
	headLen := len(resp.Head)
	if _, err := c.Write(resp.Head); err != nil {
		bc.Drop()
		return err
	}
	bc.BR.Discard(headLen)
	idle := r.o.TunnelTimeout
	if rt.TunnelTimeout > 0 {
		idle = rt.TunnelTimeout
	}
	t := &tunnel{idle: idle}
	t.touch()
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
	// Two fresh goroutines own the tunnel from here (small stacks: the
	// request's goroutine, grown by parsing and proxying, ends).
	st.begin()
	cnt := rt.countOf(ep)
	cnt.Add(1)
	var wg sync.WaitGroup
	wg.Add(2)
	var fwd, back int64
	go func() { defer wg.Done(); back = t.relay(c, backend) }()
	go func() { defer wg.Done(); fwd = t.relay(backend, c) }()
	go func() {
		wg.Wait()
		c.Close()
		backend.Close()
		cnt.Add(-1)
		st.end()
		st.websockets.Dec()
		r.obs.recordEntry(st, entry, start, http.StatusSwitchingProtocols, in+fwd, out+back, ep)
	}()
	return errTunnelOwned
}

// errTunnelOwned says the connection now belongs to a tunnel's goroutines.
var errTunnelOwned = errors.New("connection taken by a tunnel")

type tunnel struct {
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte either way
}

func (t *tunnel) touch() { t.last.Store(time.Now().UnixNano()) }

// relay copies src to dst until src ends (then half-closes dst) or fails
// or the tunnel idles (then closes both). A socket is waited on without a
// buffer; a TLS connection (which may hold decrypted bytes the socket no
// longer shows) is read directly.
func (t *tunnel) relay(dst, src net.Conn) int64 {
	var n int64
	var raw syscall.RawConn
	if sc, ok := src.(syscall.Conn); ok {
		var err error
		if raw, err = sc.SyscallConn(); err != nil {
			return n
		}
	}
	idle := func(err error) bool {
		var ne net.Error
		return !errors.As(err, &ne) || !ne.Timeout() || time.Since(time.Unix(0, t.last.Load())) >= t.idle
	}
	for {
		src.SetReadDeadline(time.Unix(0, t.last.Load()).Add(t.idle))
		if raw != nil {
			if err := waitReadable(raw); err != nil {
				if !idle(err) {
					continue // the other direction was busy: not idle
				}
				dst.Close()
				src.Close()
				return n
			}
		}
		bp := copyBufs.Get().(*[]byte)
		for {
			m, rerr := src.Read(*bp)
			if m > 0 {
				t.touch()
				n += int64(m)
				if _, werr := dst.Write((*bp)[:m]); werr != nil {
					copyBufs.Put(bp)
					dst.Close()
					src.Close()
					return n
				}
			}
			if rerr != nil {
				if raw == nil && !idle(rerr) {
					break // the other direction was busy: not idle
				}
				copyBufs.Put(bp)
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && isEOF(rerr) && cw.CloseWrite() == nil {
					return n
				}
				dst.Close()
				src.Close()
				return n
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
