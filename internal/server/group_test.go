package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
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
