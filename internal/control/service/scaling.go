package service

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/autoscale"
	"github.com/gantry-paas/gantry/internal/control/cron"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// Scale sets an app's gears: a fixed number, or the range the autoscaler
// keeps to (with its target of connections per gear). A running app is
// brought into the range at once.
func (s *Service) Scale(ctx context.Context, caller *store.User, domain, name string, b apitypes.ScaleRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	set := autoscale.Settings{Min: max(app.MinGears, 1), Max: max(app.MaxGears, app.MinGears, 1), Target: app.TargetConns}
	if app.MinGears == 0 && app.MaxGears > 0 {
		set.Min = 0
	}
	if set.Target == 0 {
		set.Target = 16
	}
	switch {
	case b.Gears != nil && (b.Min != nil || b.Max != nil):
		return nil, refuse(Invalid, apitypes.CodeInvalid, "pass either --gears or --min/--max, not both")
	case b.Gears != nil:
		set.Min, set.Max = *b.Gears, *b.Gears
	case b.Min == nil && b.Max == nil && b.Target == nil:
		return nil, refuse(Invalid, apitypes.CodeInvalid, "nothing to change: pass --gears N, or --min N --max M, or --target-connections T")
	}
	if b.Min != nil {
		set.Min = *b.Min
	}
	if b.Max != nil {
		set.Max = *b.Max
	}
	if b.Target != nil {
		set.Target = *b.Target
	}
	if err := set.Validate(s.o.MaxGears); err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.MinGears, app.MaxGears, app.TargetConns = set.Min, set.Max, set.Target
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, fmt.Errorf("saving scale: %w", err)
	}
	cur := max(app.Scale, 1)
	if app.Idle {
		cur = 0
	}
	want := max(set.Min, min(set.Max, cur))
	// (The same count for an app that now scales itself: the agent makes
	// its standby gear for the next scale-up.)
	if app.ActiveDeployment != "" && !app.Stopped && (want != cur || app.Autoscaled()) && !(app.Idle && set.Min == 0) {
		if err := s.o.Agent.ScaleTo(ctx, app.Key(), want, io.Discard); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "the new gears did not start: "+err.Error())
		}
		if want != cur {
			s.record(app, store.Event{Kind: "manual", From: cur, To: want, Reason: fmt.Sprintf("%s set min %d, max %d, target %d", caller.Name, set.Min, set.Max, set.Target)})
		}
	}
	return s.App(caller, domain, name)
}

// Idle sets how long an app may go without traffic before it idles
// ("off": never) and, with now, idles it at once.
func (s *Service) Idle(ctx context.Context, caller *store.User, domain, name string, b apitypes.IdleRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if b.After == "" && !b.Now {
		return nil, refuse(Invalid, apitypes.CodeInvalid, "pass --after DURATION (e.g. 30m, or off) or --now")
	}
	if b.After != "" {
		var d time.Duration
		if b.After != "off" && b.After != "0" {
			d, err = time.ParseDuration(b.After)
			if err != nil || d < time.Second {
				return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%q is not a duration of at least 1s: use e.g. 30m, 2h, or off", b.After))
			}
		}
		err = s.st.Update(func(tx *store.Tx) error {
			if err := tx.Get(app.Key(), app); err != nil {
				return err
			}
			app.IdleAfter = d
			return tx.Put(app.Key(), app)
		})
		if err != nil {
			return nil, fmt.Errorf("saving idle timeout: %w", err)
		}
	}
	if b.Now {
		if app.ActiveDeployment == "" {
			return nil, refuse(Conflict, apitypes.CodeNothingRunning, "nothing is deployed yet: push code with `git push` first")
		}
		if app.Stopped {
			return nil, refuse(Conflict, apitypes.CodeConflict, "the app is stopped: start it first")
		}
		from := app.Scale
		if err := s.o.Agent.ScaleTo(ctx, app.Key(), 0, io.Discard); err != nil {
			return nil, fmt.Errorf("idling: %w", err)
		}
		s.record(app, store.Event{Kind: "idle", From: from, To: 0, Reason: caller.Name + " idled the app"})
	}
	return s.App(caller, domain, name)
}

func (s *Service) record(app *store.App, e store.Event) {
	if s.o.Events != nil {
		s.o.Events.Record(app, e)
	}
}

// ScaleProcesses sets how many gears process types run (`gantry ps scale
// APP worker=3 web=2`): web is the app's fixed web scale, the others its
// formation. Every count is checked before anything changes.
func (s *Service) ScaleProcesses(ctx context.Context, caller *store.User, domain, name string, b apitypes.FormationRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if len(b.Processes) == 0 {
		return nil, refuse(Invalid, apitypes.CodeInvalid, "nothing to change: pass TYPE=N, e.g. worker=2 web=3")
	}
	if app.ActiveDeployment == "" {
		return nil, refuse(Conflict, apitypes.CodeNothingRunning, "nothing is deployed yet: push code with `git push` first")
	}
	var dep store.Deployment
	if err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep) }); err != nil {
		return nil, fmt.Errorf("reading the active deployment: %w", err)
	}
	types := append([]string{"web"}, sortedKeys(dep.Processes)...)
	procs := sortedKeys(b.Processes)
	for _, p := range procs {
		n := b.Processes[p]
		switch {
		case p != "web" && dep.Processes[p] == "":
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%s has no process type %q: its Procfile has %s", app.Name, p, strings.Join(types, ", ")))
		case n < 0:
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%s=%d: a count is 0 or more", p, n))
		case p == "web" && n == 0:
			return nil, refuse(Invalid, apitypes.CodeInvalid, "web=0: the web process needs a gear; stop the app with `gantry app stop`, or let it idle with `gantry app idle`")
		case s.o.MaxGears > 0 && n > s.o.MaxGears:
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%s=%d is beyond this platform's --max-gears (%d)", p, n, s.o.MaxGears))
		}
	}
	// The workers together stay within the app's limit too.
	workers := 0
	for p, n := range store.Formation(app, &dep) {
		if m, ok := b.Processes[p]; ok {
			n = m
		}
		workers += n
	}
	if s.o.MaxGears > 0 && workers > s.o.MaxGears {
		return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("the app's workers would run %d gears together; this platform's --max-gears allows %d per app", workers, s.o.MaxGears))
	}
	for _, p := range procs {
		n := b.Processes[p]
		if p == "web" {
			if _, err := s.Scale(ctx, caller, domain, name, apitypes.ScaleRequest{Gears: &n}); err != nil {
				return nil, err
			}
			continue
		}
		from := store.Formation(app, &dep)[p]
		if err := s.o.Agent.ScaleProcess(ctx, app.Key(), p, n, io.Discard); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("%s: the gears did not start: %v", p, err))
		}
		if from != n {
			s.record(app, store.Event{Kind: "manual", From: from, To: n, Reason: fmt.Sprintf("%s set %s=%d", caller.Name, p, n)})
		}
		s.log.Info("process scaled", "app", app.FullName(), "process", p, "gears", n, "user", caller.Name)
	}
	return s.App(caller, domain, name)
}

// CronJobs lists the scheduled jobs of an app's active deployment with
// their last runs and next times.
func (s *Service) CronJobs(caller *store.User, domain, name string) (*store.App, []cron.Entry, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, nil, err
	}
	if s.o.Cron == nil {
		return app, nil, refuse(Conflict, apitypes.CodeConflict, "this machine runs no cron jobs (it is not both a control machine and a node)")
	}
	jobs, err := s.o.Cron.List(app)
	return app, jobs, err
}
