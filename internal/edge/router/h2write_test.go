package router

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

// blockingSink is a socket whose writes wait until released.
type blockingSink struct {
	mu      sync.Mutex
	writes  [][]byte
	entered chan struct{}
	release chan struct{}
	err     error
}

func newSink() *blockingSink {
	return &blockingSink{entered: make(chan struct{}, 100), release: make(chan struct{}, 100)}
}

// writerOn is a writer to a new sink with first on the socket, waiting.
func writerOn(first string) (*h2Writer, *blockingSink) {
	s := newSink()
	w := &h2Writer{}
	w.init(s.write)
	w.Write([]byte(first))
	<-s.entered
	return w, s
}

func (s *blockingSink) write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, append([]byte(nil), p...))
	return len(p), s.err
}

// What the server writes while a write is in flight leaves together, in
// order, in the next one; a quiet connection keeps no goroutine.
func TestH2WriterBatches(t *testing.T) {
	w, s := writerOn("a")
	for _, f := range []string{"b", "c", "d"} {
		if n, err := w.Write([]byte(f)); n != 1 || err != nil {
			t.Fatalf("queued write: %d %v", n, err)
		}
	}
	s.release <- struct{}{}
	<-s.entered
	s.release <- struct{}{}
	w.drain(time.Minute, func() { t.Error("drain gave up on a writer that finished") })
	if len(s.writes) != 2 || string(s.writes[0]) != "a" || string(s.writes[1]) != "bcd" {
		t.Fatalf("socket writes %q; want [a bcd]", s.writes)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writing || w.pend != nil {
		t.Errorf("after the writes: writing=%v pend=%v", w.writing, w.pend)
	}
}

// Beyond h2WriteMax queued the server's writes wait, as on a full socket;
// a socket error fails every later write; a close waits for the queue at
// most its bound, then unblocks the socket.
func TestH2WriterBackpressureAndErrors(t *testing.T) {
	w, s := writerOn("first")
	w.Write(bytes.Repeat([]byte("x"), h2WriteMax))
	done := make(chan struct{})
	go func() {
		w.Write([]byte("over"))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("a write beyond the bound did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	s.release <- struct{}{} // "first" written; the queue moves to the socket
	<-done
	<-s.entered
	s.mu.Lock()
	s.err = errors.New("connection reset")
	s.mu.Unlock()
	s.release <- struct{}{} // the big write fails; "over" is lost with the connection
	w.drain(time.Minute, func() {})
	if _, err := w.Write([]byte("late")); err == nil || err.Error() != "connection reset" {
		t.Errorf("a write after the socket failed: %v", err)
	}

	w2, stuck := writerOn("never read")
	unblocked := make(chan struct{})
	w2.drain(50*time.Millisecond, func() { close(unblocked); stuck.release <- struct{}{} })
	select {
	case <-unblocked:
	default:
		t.Error("drain returned without unblocking a stuck write")
	}
}

// A connection's queue lost to a socket error never reaches another
// connection's socket: every buffer back in the pool is empty.
func TestH2WriterPoolKeepsNothing(t *testing.T) {
	w, s := writerOn("one")
	w.Write([]byte("secret of the first connection"))
	s.mu.Lock()
	s.err = errors.New("broken pipe")
	s.mu.Unlock()
	s.release <- struct{}{}
	w.drain(time.Minute, func() {})
	var got []*[]byte
	for i := 0; i < 8; i++ {
		b := h2WriteBufs.Get().(*[]byte)
		if len(*b) != 0 {
			t.Errorf("a pooled buffer holds %q", *b)
		}
		got = append(got, b)
	}
	for _, b := range got {
		h2WriteBufs.Put(b)
	}
}
