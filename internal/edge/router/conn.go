package router

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// idleConn closes a tunnel that carried nothing either way for its idle
// time: every read and write pushes the read deadline on, so a reader
// blocked on a silent peer wakes with a timeout only when both directions
// were quiet.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func newIdleConn(c net.Conn, idle time.Duration) net.Conn {
	c.SetReadDeadline(time.Now().Add(idle))
	return &idleConn{Conn: c, idle: idle}
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return n, err
}

func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// bufferPool lends the proxy its copy buffers.
type bufferPool struct{}

var copyBufs = &httpfast.CopyBufs

func (bufferPool) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBufs.Put(&b) }

// splice copies both ways until both directions ended, passing half-closes
// on, and returns the bytes from a to b and from b to a.
func splice(a, b net.Conn) (ab, ba int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ba = copyHalf(a, b)
	}()
	ab = copyHalf(b, a)
	wg.Wait()
	a.Close()
	b.Close()
	return ab, ba
}

// copyHalf copies src to dst; at src's end it half-closes dst, on an
// error it closes both (the other direction then ends too).
func copyHalf(dst, src net.Conn) int64 {
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(dst, src, *bp)
	copyBufs.Put(bp)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return n
		}
	}
	dst.Close()
	src.Close()
	return n
}

var errPeeked = errors.New("peeked")
