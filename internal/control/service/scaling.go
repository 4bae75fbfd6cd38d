package service

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/autoscale"
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
	if app.ActiveDeployment != "" && !app.Stopped && want != cur && !(app.Idle && set.Min == 0) {
		if err := s.o.Agent.ScaleTo(ctx, app.Key(), want, io.Discard); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "the new gears did not start: "+err.Error())
		}
		s.record(app, store.Event{Kind: "manual", From: cur, To: want, Reason: fmt.Sprintf("%s set min %d, max %d, target %d", caller.Name, set.Min, set.Max, set.Target)})
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
