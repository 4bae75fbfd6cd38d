package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/events"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/autoscale"
	"github.com/gantry-paas/gantry/internal/control/store"
)

func (a *API) registerScaling() {
	type scaleIn struct {
		AppRef
		Body apitypes.ScaleRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "scale-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/scale", Security: bearer,
		Summary: "Scale an app", Description: "A fixed number of gears, or a range the autoscaler keeps to on live connections.", Tags: []string{"scaling"}},
		func(ctx context.Context, in *scaleIn) (*body[apitypes.AppView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			s := autoscale.Settings{Min: max(app.MinGears, 1), Max: max(app.MaxGears, app.MinGears, 1), Target: app.TargetConns}
			if app.MinGears == 0 && app.MaxGears > 0 {
				s.Min = 0
			}
			if s.Target == 0 {
				s.Target = 16
			}
			b := in.Body
			switch {
			case b.Gears != nil && (b.Min != nil || b.Max != nil):
				return nil, invalid("pass either --gears or --min/--max, not both")
			case b.Gears != nil:
				s.Min, s.Max = *b.Gears, *b.Gears
			case b.Min == nil && b.Max == nil && b.Target == nil:
				return nil, invalid("nothing to change: pass --gears N, or --min N --max M, or --target-connections T")
			}
			if b.Min != nil {
				s.Min = *b.Min
			}
			if b.Max != nil {
				s.Max = *b.Max
			}
			if b.Target != nil {
				s.Target = *b.Target
			}
			if err := s.Validate(a.o.MaxGears); err != nil {
				return nil, invalid(err.Error())
			}
			err = a.o.Store.Update(func(tx *store.Tx) error {
				if err := tx.Get(app.Key(), app); err != nil {
					return err
				}
				app.MinGears, app.MaxGears, app.TargetConns = s.Min, s.Max, s.Target
				return tx.Put(app.Key(), app)
			})
			if err != nil {
				return nil, a.internal("saving scale", err)
			}
			cur := max(app.Scale, 1)
			if app.Idle {
				cur = 0
			}
			want := max(s.Min, min(s.Max, cur))
			if app.ActiveDeployment != "" && !app.Stopped && want != cur && !(app.Idle && s.Min == 0) {
				if err := a.o.Agent.ScaleTo(ctx, app.Key(), want, io.Discard); err != nil {
					return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, "the new gears did not start: "+err.Error())
				}
				a.record(app, store.Event{Kind: "manual", From: cur, To: want, Reason: fmt.Sprintf("%s set min %d, max %d, target %d", userOf(ctx).Name, s.Min, s.Max, s.Target)})
			}
			app, _ = a.loadApp(ctx, in.AppRef)
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	type idleIn struct {
		AppRef
		Body apitypes.IdleRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "idle-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/idle", Security: bearer,
		Summary: "Idle an app", Description: "An idle app runs no gears; its route stays and the next request wakes it (held meanwhile).", Tags: []string{"scaling"}},
		func(ctx context.Context, in *idleIn) (*body[apitypes.AppView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			if in.Body.After == "" && !in.Body.Now {
				return nil, invalid("pass --after DURATION (e.g. 30m, or off) or --now")
			}
			if in.Body.After != "" {
				var d time.Duration
				if in.Body.After != "off" && in.Body.After != "0" {
					d, err = time.ParseDuration(in.Body.After)
					if err != nil || d < time.Second {
						return nil, invalid(fmt.Sprintf("%q is not a duration of at least 1s: use e.g. 30m, 2h, or off", in.Body.After))
					}
				}
				err = a.o.Store.Update(func(tx *store.Tx) error {
					if err := tx.Get(app.Key(), app); err != nil {
						return err
					}
					app.IdleAfter = d
					return tx.Put(app.Key(), app)
				})
				if err != nil {
					return nil, a.internal("saving idle timeout", err)
				}
			}
			if in.Body.Now {
				if app.ActiveDeployment == "" {
					return nil, problem(http.StatusConflict, apitypes.CodeNothingRunning, "nothing is deployed yet: push code with `git push` first")
				}
				if app.Stopped {
					return nil, problem(http.StatusConflict, apitypes.CodeConflict, "the app is stopped: start it first")
				}
				from := app.Scale
				if err := a.o.Agent.ScaleTo(ctx, app.Key(), 0, io.Discard); err != nil {
					return nil, a.internal("idling", err)
				}
				a.record(app, store.Event{Kind: "idle", From: from, To: 0, Reason: userOf(ctx).Name + " idled the app"})
			}
			app, _ = a.loadApp(ctx, in.AppRef)
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "app-events", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/events", Security: bearer,
		Summary: "An app's events", Description: "Every scale, idle and wake decision and every port scan detected, with its reason, oldest first (the last 100).", Tags: []string{"scaling"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.EventView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			evs, err := events.List(a.o.Store, app.ID)
			if err != nil {
				return nil, a.internal("reading events", err)
			}
			views := make([]apitypes.EventView, 0, len(evs))
			for _, e := range evs {
				views = append(views, apitypes.EventView{Time: e.Time, Kind: e.Kind, From: e.From, To: e.To, Reason: e.Reason})
			}
			return &body[[]apitypes.EventView]{Body: views}, nil
		})
}

func (a *API) registerServices() {
	type servicesIn struct {
		AppRef
		Gear string `query:"gear" doc:"Only this gear"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "app-services", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/services", Security: bearer,
		Summary: "What listens in an app's gears", Description: "The web process, databases and anything the app opened: what `gantry port-forward` forwards over SSH.", Tags: []string{"apps"}},
		func(ctx context.Context, in *servicesIn) (*body[[]apitypes.ServiceView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			svcs, err := a.o.Agent.Services(app.Key(), in.Gear)
			if err != nil {
				return nil, notFound(apitypes.CodeNotFound, err.Error())
			}
			return &body[[]apitypes.ServiceView]{Body: nonNil(svcs)}, nil
		})
}

func (a *API) record(app *store.App, e store.Event) {
	if a.o.Events != nil {
		a.o.Events.Record(app, e)
	}
}
