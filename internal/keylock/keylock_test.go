package keylock

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestSameKeySerialisesOthersDoNot(t *testing.T) {
	var l Locks
	var inA, maxA atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.Lock("a")
			n := inA.Add(1)
			for {
				m := maxA.Load()
				if n <= m || maxA.CompareAndSwap(m, n) {
					break
				}
			}
			inA.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if maxA.Load() != 1 {
		t.Errorf("%d holders of key a at once; want 1", maxA.Load())
	}
	unlockA := l.Lock("a")
	done := make(chan struct{})
	go func() { l.Lock("b")(); close(done) }()
	<-done // b is not blocked by a
	unlockA()
}
