package autoscale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/events"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// Router is what the scaler reads: live concurrency and last activity.
type Router interface {
	Concurrency(appKey string) int
	LastActivity(appKey string) time.Time
}

// Wakes are the router's requests to wake idle apps (router.WakeQueue).
type Wakes interface {
	Ready() <-chan struct{}
	Take() []string
}

// Agent is what the scaler asks to act.
type Agent interface {
	ScaleTo(ctx context.Context, appKey string, n int, out io.Writer) error
}

// Options configure a Scaler.
type Options struct {
	Store  *store.Store
	Router Router
	Agent  Agent
	Log    *slog.Logger
	Policy Policy
	// Interval between samples (default 1s).
	Interval time.Duration
	// Wakes, if set, brings the router's wake requests.
	Wakes Wakes
	// Leading, if set, says whether this machine makes the scaling
	// decisions now (a cluster elects one); wakes are served by every
	// machine whose router holds a request.
	Leading func() bool
	// Events records the scaler's decisions (nil: a log of its own).
	Events *events.Log
}

// Scaler samples every app's concurrency, scales autoscaled apps, idles
// apps without traffic and wakes idle apps on request.
//
// Concurrency: Run's loop owns the samples; each scale change runs in its
// own goroutine, at most one per app (busy), tracked by wg.
type Scaler struct {
	o   Options
	log *slog.Logger

	mu         sync.Mutex
	samples    map[string][]float64
	lastChange map[string]time.Time
	busy       map[string]bool
	ctx        context.Context
	wg         sync.WaitGroup
}

// New validates the options.
func New(o Options) (*Scaler, error) {
	if o.Store == nil || o.Router == nil || o.Agent == nil {
		return nil, errors.New("autoscale: Store, Router and Agent are required")
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.Policy.Stable == 0 {
		o.Policy = DefaultPolicy
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Events == nil {
		o.Events = events.New(o.Store, o.Log, nil)
	}
	return &Scaler{o: o, log: o.Log.With("component", "autoscale"), samples: map[string][]float64{},
		lastChange: map[string]time.Time{}, busy: map[string]bool{}, ctx: context.Background()}, nil
}

// Run samples and decides once per interval until ctx ends.
func (s *Scaler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	var wakes <-chan struct{}
	if s.o.Wakes != nil {
		wakes = s.o.Wakes.Ready()
	}
	for {
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return nil
		case <-t.C:
			s.tick(time.Now())
		case <-wakes:
			for _, key := range s.o.Wakes.Take() {
				s.Wake(key)
			}
		}
	}
}

func (s *Scaler) tick(now time.Time) {
	if s.o.Leading != nil && !s.o.Leading() {
		return
	}
	var apps []store.App
	if err := s.o.Store.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	}); err != nil {
		s.log.Error("listing apps", "err", err)
		return
	}
	keep := map[string]bool{}
	for i := range apps {
		app := &apps[i]
		key := app.Key()
		keep[key] = true
		if app.ActiveDeployment == "" || app.Stopped {
			continue
		}
		c := float64(s.o.Router.Concurrency(key))
		s.mu.Lock()
		samples := append(s.samples[key], c)
		if max := int(2*time.Minute/s.o.Interval) + 1; len(samples) > max {
			samples = samples[len(samples)-max:]
		}
		s.samples[key] = samples
		if s.lastChange[key].IsZero() {
			s.lastChange[key] = now // first seen
		}
		since := now.Sub(s.lastChange[key])
		busy := s.busy[key]
		s.mu.Unlock()
		if busy || app.Idle {
			continue
		}
		if app.IdleAfter > 0 && c == 0 {
			last := s.o.Router.LastActivity(key)
			quiet := now.Sub(last)
			if last.IsZero() || since < quiet {
				quiet = since // no traffic seen since start, or a change since
			}
			if quiet >= app.IdleAfter {
				s.act(app, 0, "idle", fmt.Sprintf("no traffic for %s (idle after %s)", quiet.Round(time.Second), app.IdleAfter))
				continue
			}
		}
		if !app.Autoscaled() {
			continue
		}
		d := Decide(s.o.Policy, Input{Samples: samples, Interval: s.o.Interval, Current: max(app.Scale, 1),
			Settings: Settings{Min: app.MinGears, Max: app.MaxGears, Target: app.TargetConns}, SinceChange: since})
		if d.Gears != max(app.Scale, 1) {
			kind := "scale_up"
			if d.Gears < app.Scale {
				kind = "scale_down"
			}
			s.act(app, d.Gears, kind, d.Reason)
		}
	}
	s.mu.Lock()
	for k := range s.samples {
		if !keep[k] {
			delete(s.samples, k)
			delete(s.lastChange, k)
		}
	}
	s.mu.Unlock()
}

// act scales an app in the background, at most one change per app at a
// time, and records the event.
func (s *Scaler) act(app *store.App, n int, kind, reason string) bool {
	key := app.Key()
	s.mu.Lock()
	if s.busy[key] {
		s.mu.Unlock()
		return false
	}
	s.busy[key] = true
	ctx := s.ctx
	s.mu.Unlock()
	from := app.Scale
	if app.Idle {
		from = 0
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.o.Agent.ScaleTo(ctx, key, n, io.Discard)
		s.mu.Lock()
		s.busy[key] = false
		s.lastChange[key] = time.Now()
		s.mu.Unlock()
		if err != nil {
			s.Record(app, store.Event{Kind: kind + "_failed", From: from, To: n, Reason: reason + ": " + err.Error()})
			return
		}
		s.Record(app, store.Event{Kind: kind, From: from, To: n, Reason: reason})
	}()
	return true
}

// Wake starts an idle app's gears (min, at least one). Requests that find
// the app idle call it; concurrent calls wake it once.
func (s *Scaler) Wake(appKey string) {
	var app store.App
	if err := s.o.Store.View(func(tx *store.Tx) error { return tx.Get(appKey, &app) }); err != nil || !app.Idle {
		return
	}
	s.act(&app, max(app.MinGears, 1), "wake", "a request arrived while the app was idle")
}

// Record records one of the scaler's decisions in the app's events.
func (s *Scaler) Record(app *store.App, e store.Event) { s.o.Events.Record(app, e) }
