package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type recRole struct {
	name string
	log  *[]string
	mu   *sync.Mutex
	err  error
}

func (r recRole) Run(ctx context.Context) error {
	if r.err != nil {
		return r.err
	}
	<-ctx.Done()
	r.mu.Lock()
	*r.log = append(*r.log, r.name)
	r.mu.Unlock()
	return nil
}

// Roles stop stage by stage (front doors first, the route publisher
// last), and a failing role stops the others.
func TestGroupStopsInStages(t *testing.T) {
	for _, fail := range []bool{false, true} {
		var mu sync.Mutex
		var stopped []string
		g := newGroup()
		r := func(name string) recRole { return recRole{name: name, log: &stopped, mu: &mu} }
		g.Go(stageState, "routes", r("routes"))
		g.Go(stageNode, "agent", r("agent"))
		g.Go(stageControl, "builder", r("builder"))
		g.Go(stageDoors, "router", r("router"))
		ctx, cancel := context.WithCancel(context.Background())
		if fail {
			g.Go(stageControl, "broken", recRole{err: errors.New("port taken")})
		} else {
			cancel()
		}
		err := g.Wait(ctx)
		cancel()
		if got := strings.Join(stopped, ","); got != "router,builder,agent,routes" {
			t.Errorf("fail=%v: stopped %s", fail, got)
		}
		if fail != (err != nil) || fail && !strings.Contains(err.Error(), "broken: port taken") {
			t.Errorf("fail=%v: err %v", fail, err)
		}
	}
}

type stuck struct{}

func (stuck) Run(context.Context) error { select {} }

// A role that cannot stop (its store is out of reach) does not hold the
// stop past its stage's limit; the next stages still stop.
func TestGroupStopLimit(t *testing.T) {
	g := newGroup()
	g.limit[stageControl] = 100 * time.Millisecond
	g.Go(stageControl, "stuck", stuck{})
	stopped := make(chan struct{})
	g.Go(stageNode, "node", roleFunc(func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error)
	go func() { done <- g.Wait(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stop waited for a role that cannot stop")
	}
	select {
	case <-stopped:
	default:
		t.Error("the next stage was not stopped")
	}
}
