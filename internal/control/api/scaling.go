package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"
)

func (a *API) registerScaling() {
	type scaleIn struct {
		AppRef
		Body apitypes.ScaleRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "scale-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/scale", Security: bearer,
		Summary: "Scale an app", Description: "A fixed number of gears, or a range the autoscaler keeps to on live connections.", Tags: []string{"scaling"}},
		func(ctx context.Context, in *scaleIn) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.Scale(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "scaling", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	type formationIn struct {
		AppRef
		Body apitypes.FormationRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "scale-processes", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/formation", Security: bearer,
		Summary: "Scale process types", Description: "Gear counts per Procfile process type (worker=3); web sets the fixed web scale. Every count is checked before anything changes.", Tags: []string{"scaling"}},
		func(ctx context.Context, in *formationIn) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.ScaleProcesses(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "scaling", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-cron", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/cron", Security: bearer,
		Summary: "List an app's cron jobs", Description: "app.json cron entries and .openshift/cron/PERIOD/ executables of the active deployment, with their next and last runs.", Tags: []string{"scaling"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.CronView], error) {
			_, jobs, err := a.o.Service.CronJobs(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "listing cron jobs", err)
			}
			out := []apitypes.CronView{}
			for _, j := range jobs {
				v := apitypes.CronView{ID: j.Job.ID, Schedule: j.Job.Schedule, Command: j.Job.Command, Source: j.Job.Source, Running: j.Status.Running,
					Gear: j.Status.Gear, Error: j.Status.Error, Runs: j.Status.Runs, Failures: j.Status.Failures, Skipped: j.Status.Skipped}
				if !j.Next.IsZero() {
					v.Next = &j.Next
				}
				if !j.Status.Last.IsZero() {
					v.Last = &j.Status.Last
					if !j.Status.Running && j.Status.Error == "" {
						exit := j.Status.Exit
						v.Exit, v.Took = &exit, j.Status.Took.Round(time.Millisecond).String()
					}
				}
				out = append(out, v)
			}
			return &body[[]apitypes.CronView]{Body: out}, nil
		})

	type idleIn struct {
		AppRef
		Body apitypes.IdleRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "idle-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/idle", Security: bearer,
		Summary: "Idle an app", Description: "An idle app runs no gears; its route stays and the next request wakes it (held meanwhile).", Tags: []string{"scaling"}},
		func(ctx context.Context, in *idleIn) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.Idle(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "idling", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "app-events", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/events", Security: bearer,
		Summary: "An app's events", Description: "Every scale, idle and wake decision and every port scan detected, with its reason, oldest first (the last 100).", Tags: []string{"scaling"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.EventView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			evs, err := a.o.Service.Events(app)
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

func (a *API) registerStats() {
	huma.Register(a.h, huma.Operation{OperationID: "app-stats", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/stats", Security: bearer,
		Summary: "An app's traffic over the last hour", Description: "Requests per second, latency (p50, p99), live connections and running web gears, one sample every few seconds, as this server's router saw them.",
		Tags: []string{"scaling"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.StatsView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			v := apitypes.StatsView{Samples: []apitypes.StatSample{}}
			if a.o.Stats != nil {
				v.Every = a.o.Stats.Every().String()
				for _, s := range a.o.Stats.Of(app.FullName()) {
					v.Samples = append(v.Samples, apitypes.StatSample(s))
				}
			}
			return &body[apitypes.StatsView]{Body: v}, nil
		})
}
