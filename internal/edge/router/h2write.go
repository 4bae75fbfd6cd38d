package router

import (
	"sync"
	"time"
)

// x/net/http2 flushes its frames whenever its write queue is empty, and a
// stream's handler waits for each of its frames to be written before it
// makes the next: with many streams, a connection sent one small TLS
// write (a syscall, and on loopback the peer's receive too) per frame —
// most of the router's CPU per HTTP/2 request. An h2 connection's writes
// are therefore handed to a goroutine of its own while it is busy: what
// the server writes meanwhile (other streams' frames) is queued and leaves
// in the next write, together. With nothing in flight a write goes out at
// once; no goroutine or buffer is held while the connection is quiet.

// h2WriteMax bounds what a connection queues: beyond it the server's
// writes wait, as they would on the socket, so that flow control still
// reaches the handlers.
const h2WriteMax = 256 << 10

var h2WriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// h2Writer is the write side of an h2Conn.
type h2Writer struct {
	mu      sync.Mutex
	cond    sync.Cond
	pend    *[]byte // queued, not yet written (nil: none)
	writing bool    // the writer goroutine runs
	err     error   // the socket's write error: every later write fails
	write   func([]byte) (int, error)
}

func (w *h2Writer) init(write func([]byte) (int, error)) {
	w.cond.L, w.write = &w.mu, write
}

// Write queues p; the writer goroutine sends it.
func (w *h2Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && w.pend != nil && len(*w.pend) >= h2WriteMax {
		w.cond.Wait()
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.pend == nil {
		w.pend = h2WriteBufs.Get().(*[]byte)
	}
	*w.pend = append(*w.pend, p...)
	if !w.writing {
		w.writing = true
		go w.run()
	}
	return len(p), nil
}

// run writes what is queued until nothing is.
func (w *h2Writer) run() {
	w.mu.Lock()
	for w.pend != nil && w.err == nil {
		buf := w.pend
		w.pend = nil
		w.cond.Broadcast() // room again
		w.mu.Unlock()
		_, err := w.write(*buf)
		*buf = (*buf)[:0]
		if cap(*buf) <= 4*h2WriteMax {
			h2WriteBufs.Put(buf)
		}
		w.mu.Lock()
		if err != nil {
			w.err = err
		}
	}
	if w.pend != nil { // failed: what was queued is lost with the connection
		*w.pend = (*w.pend)[:0] // (never to another connection)
		h2WriteBufs.Put(w.pend)
		w.pend = nil
	}
	w.writing = false
	w.cond.Broadcast()
	w.mu.Unlock()
}

// drain waits until what is queued was written (or failed), at most d:
// a client that reads nothing does not hold a closing connection.
func (w *h2Writer) drain(d time.Duration, unblock func()) {
	t := time.AfterFunc(d, unblock)
	defer t.Stop()
	w.mu.Lock()
	for w.writing {
		w.cond.Wait()
	}
	w.mu.Unlock()
}
