// Package accesslog is the buffered access log of the router and the
// egress router: a line is appended under a lock into a reused buffer
// (no allocation per line) and the file is written every second by Run,
// and once more when it ends.
package accesslog

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"
)

// Writer is one access log. A nil *Writer logs nothing.
type Writer struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
}

// New returns a writer to w, or nil when w is nil (no access log).
func New(w io.Writer) *Writer {
	if w == nil {
		return nil
	}
	return &Writer{w: bufio.NewWriterSize(w, 64<<10)}
}

// Line appends one line: add appends its text (without the newline) to
// the buffer it is given and returns it.
func (l *Writer) Line(add func(b []byte) []byte) {
	if l == nil {
		return
	}
	l.mu.Lock()
	b := add(l.buf[:0])
	b = append(b, '\n')
	l.w.Write(b)
	l.buf = b
	l.mu.Unlock()
}

// Run flushes every second until ctx ends, then once more.
func (l *Writer) Run(ctx context.Context) {
	if l == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		l.mu.Lock()
		l.w.Flush()
		l.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}
