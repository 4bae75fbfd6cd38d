package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// closed is a channel that is ready at once.
var closed = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// Stages in which the roles stop, first to last: the front doors (they
// stop accepting and drain their open requests and tunnels), then the
// control loops, then the node's, the route publisher last.
const (
	stageDoors = iota
	stageControl
	stageNode
	stageState
	stages
)

type role interface{ Run(context.Context) error }

// group runs the server's roles, each with a context of its own. When the
// group's context ends or a role fails, it stops them stage by stage: a
// stage has returned before the next is told to stop.
type group struct {
	members [stages][]member
	failed  chan error
	mu      sync.Mutex
	errs    []error
	// limit bounds how long a stage may take to stop (0: no bound); a
	// role still running then is left (it is logged): a stop must not
	// hang on a store that cannot be reached, and gears outlive the
	// server anyway.
	limit [stages]time.Duration
	log   *slog.Logger
}

type member struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

func newGroup() *group { return &group{failed: make(chan error, 1), log: slog.Default()} }

// Go starts r now, to stop in stage.
func (g *group) Go(stage int, name string, r role) {
	ctx, cancel := context.WithCancel(context.Background())
	m := member{name: name, cancel: cancel, done: make(chan struct{})}
	g.members[stage] = append(g.members[stage], m)
	go func() {
		defer close(m.done)
		if err := r.Run(ctx); err != nil {
			err = fmt.Errorf("%s: %w", name, err)
			g.mu.Lock()
			g.errs = append(g.errs, err)
			g.mu.Unlock()
			select {
			case g.failed <- err:
			default:
			}
		}
	}()
}

// Wait returns once ctx has ended or a role failed, and every role has
// stopped, in order; the error joins the roles' errors.
func (g *group) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-g.failed:
	}
	for i, stage := range g.members {
		for _, m := range stage {
			m.cancel()
		}
		var late <-chan time.Time
		if l := g.limit[i]; l > 0 {
			t := time.NewTimer(l)
			defer t.Stop()
			late = t.C
		}
		for _, m := range stage {
			select {
			case <-m.done:
				continue
			default:
			}
			select {
			case <-m.done:
			case <-late:
				g.log.Error("a role did not stop in time: leaving it (is the store reachable?)", "role", m.name, "limit", g.limit[i])
				late = closed
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}

// roleFunc is a role made of a function.
type roleFunc func(context.Context) error

func (f roleFunc) Run(ctx context.Context) error { return f(ctx) }
