package router

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Passive health of HTTP gears. A gear whose connection is refused (its
// process crashed and waits in the shim's back-off, or is starting again)
// leaves the balancing at once: the request that met the refusal is sent
// to another gear (nothing of it was sent yet), and the gear comes back
// when a probe finds it listening again. While every gear of an app is
// down, requests still try them (a 502 then says what happened).

// probeInterval is how often a down gear is dialled.
const probeInterval = 250 * time.Millisecond

type downSet struct {
	n  atomic.Int32 // len(m), read without the lock on every pick
	mu sync.Mutex
	m  map[string]time.Time // endpoint -> when it went down
}

// dialError is a failed connection to a gear: nothing was sent, so the
// request may go to another gear.
type dialError struct{ error }

func (e *dialError) Unwrap() error { return e.error }

func (r *Router) isDown(ep string) bool {
	if r.down.n.Load() == 0 {
		return false
	}
	r.down.mu.Lock()
	_, ok := r.down.m[ep]
	r.down.mu.Unlock()
	return ok
}

// markDown takes ep out of the balancing until a probe connects.
func (r *Router) markDown(ep string, err error) {
	r.down.mu.Lock()
	if r.down.m == nil {
		r.down.m = map[string]time.Time{}
	}
	_, was := r.down.m[ep]
	if !was {
		r.down.m[ep] = time.Now()
		r.down.n.Store(int32(len(r.down.m)))
	}
	r.down.mu.Unlock()
	if !was {
		r.log.Warn("gear refused a connection: out of the route until it listens again", "gear", ep, "err", err)
	}
}

// probeLoop dials the down gears until ctx ends; a gear that accepts is
// back, one that left every route is forgotten.
func (r *Router) probeLoop(ctx context.Context) {
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if r.down.n.Load() == 0 {
			continue
		}
		r.down.mu.Lock()
		eps := make([]string, 0, len(r.down.m))
		for ep := range r.down.m {
			eps = append(eps, ep)
		}
		r.down.mu.Unlock()
		t := r.table.Load()
		for _, ep := range eps {
			routed := t.routes(ep)
			up := false
			if routed {
				if c, err := net.DialTimeout("tcp", ep, probeInterval); err == nil {
					c.Close()
					up = true
				}
			}
			if up || !routed {
				r.down.mu.Lock()
				since := r.down.m[ep]
				delete(r.down.m, ep)
				r.down.n.Store(int32(len(r.down.m)))
				r.down.mu.Unlock()
				if up {
					r.log.Info("gear listens again: back in the route", "gear", ep, "down_for", time.Since(since).Round(time.Millisecond))
				}
			}
		}
	}
}

// routes says whether any route of the table has ep.
func (t *Table) routes(ep string) bool {
	for _, rt := range t.Routes {
		for _, e := range rt.Endpoints {
			if e == ep {
				return true
			}
		}
	}
	return false
}

// isDialError says whether err is a connection to a gear that failed.
func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}
