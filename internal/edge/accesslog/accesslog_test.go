package accesslog

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// Lines from many goroutines come out whole, and all of them once Run
// ends; a nil writer takes lines and does nothing.
func TestLinesAreWholeAndFlushedAtTheEnd(t *testing.T) {
	var out lockedBuf
	l := New(&out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				l.Line(func(b []byte) []byte {
					return strconv.AppendInt(append(b, "line g="...), int64(g*1000+i), 10)
				})
			}
		}()
	}
	wg.Wait()
	cancel()
	<-done
	lines := bytes.Split(bytes.TrimSuffix([]byte(out.String()), []byte("\n")), []byte("\n"))
	if len(lines) != 4000 {
		t.Fatalf("%d lines; want 4000", len(lines))
	}
	for _, ln := range lines {
		if !bytes.HasPrefix(ln, []byte("line g=")) {
			t.Fatalf("a mixed line: %q", ln)
		}
	}
	var none *Writer
	none.Line(func(b []byte) []byte { return append(b, "x"...) })
	none.Run(ctx)
}
