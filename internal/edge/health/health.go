// Package health is the active TCP check of pooled targets (the router's
// TCP route members, the egress router's TCP proxy targets): a target is
// down after two failed connects in a row and up again after one that
// succeeds.
package health

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// State is one target's check state.
type State struct {
	down  atomic.Bool
	fails int // owned by Round
}

// Down says the target failed its checks (safe from any goroutine).
func (s *State) Down() bool { return s.down.Load() }

// MarkDown takes the target out until a check passes (a passive check:
// a connection to it just failed).
func (s *State) MarkDown() { s.down.Store(true) }

// Round checks every target at once with dial (nil: reachable) and
// reports the targets that changed state; it returns when all checks are
// done. Rounds must not overlap.
func Round(targets map[string]*State, dial func(addr string) error, changed func(addr string, up bool, err error)) {
	var wg sync.WaitGroup
	for addr, s := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := dial(addr)
			if err == nil {
				s.fails = 0
				if s.down.Swap(false) {
					changed(addr, true, nil)
				}
				return
			}
			s.fails++
			if s.fails >= 2 && !s.down.Swap(true) {
				changed(addr, false, err)
			}
		}()
	}
	wg.Wait()
}

// Connect is the check: a TCP connection that opens, then is closed.
func Connect(d *net.Dialer) func(addr string) error {
	return func(addr string) error {
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// Loop checks the targets every interval until ctx ends; targets gives
// the current set each round (a copy the caller does not change while a
// round runs).
func Loop(ctx context.Context, interval time.Duration, targets func() map[string]*State, dial func(addr string) error, changed func(addr string, up bool, err error)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if t := targets(); len(t) > 0 {
			Round(t, dial, changed)
		}
	}
}
