package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/service"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
)

type AppRef struct {
	Domain string `path:"domain" doc:"Domain name"`
	App    string `path:"app" doc:"App name"`
}

// loadApp returns the caller's app, or a not-found problem for apps that
// do not exist and for other users' apps alike (no existence leak).
func (a *API) loadApp(ctx context.Context, r AppRef) (*store.App, error) {
	app, err := a.o.Service.App(userOf(ctx), r.Domain, r.App)
	if err != nil {
		return nil, asProblem(a, "loading an app", err)
	}
	return app, nil
}

func (a *API) appView(app *store.App) apitypes.AppView {
	v := apitypes.AppView{Name: app.Name, Domain: app.Domain, Type: app.Type, URL: a.o.AppURL(app.Host),
		GitURL: a.o.GitSSHURL(app.Domain, app.Name), GitHTTPURL: a.o.GitHTTPURL(app.Domain, app.Name),
		Scale: max(app.Scale, 1), GearSize: orSmall(app.GearSize), Isolation: a.o.Agent.Isolation(), Branch: app.Branch, ActiveDeployment: app.ActiveDeployment, Created: app.Created, Gears: []apitypes.GearView{}}
	v.MinGears, v.MaxGears, v.TargetConns, v.Idle = max(app.MinGears, 1), max(app.MaxGears, app.MinGears, 1), app.TargetConns, app.Idle
	if v.TargetConns == 0 {
		v.TargetConns = 16
	}
	if app.IdleAfter > 0 {
		v.IdleAfter = app.IdleAfter.String()
	}
	if a.o.Router != nil {
		v.Connections = a.o.Router.Concurrency(app.Key())
	}
	v.DiskUsed, v.DiskLimit = a.o.Agent.DiskUsage(app)
	v.Formation, v.Processes, v.Deployed = a.o.Service.Formation(app)
	v.StopGrace = app.Grace().String()
	if b := app.Backups; b != nil {
		v.Backups = fmt.Sprintf("every %s, keep last %d, daily %d, weekly %d, monthly %d", b.Every, b.KeepLast, b.KeepDaily, b.KeepWeekly, b.KeepMonthly)
		if !b.Last.IsZero() {
			v.Backups += "; last " + b.Last.Format(time.RFC3339)
		}
		if b.LastError != "" {
			v.Backups += ", failed: " + b.LastError
		}
	}
	v.Cartridges = a.cartridgeViews(app)
	v.HTTPS = app.HTTPS
	if v.HTTPS == "" {
		v.HTTPS = store.HTTPSAllow
	}
	if a.o.HTTPSPort != 0 {
		v.HTTPSURL = "https://" + app.Host + httpsSuffix(a.o.HTTPSPort) + "/"
	}
	v.Aliases, _ = a.aliasViews(app, "")
	v.TCPRoutes = a.tcpViews(app)
	for _, d := range []struct {
		dst *string
		v   time.Duration
	}{{&v.ConnectTimeout, app.ConnectTimeout}, {&v.ReadTimeout, app.ReadTimeout}, {&v.TunnelTimeout, app.TunnelTimeout}} {
		if d.v > 0 {
			*d.dst = d.v.String()
		}
	}
	switch {
	case app.ActiveDeployment == "":
		v.State = "not_deployed"
	case app.Idle && !app.Stopped:
		v.State = "idle"
	case app.Stopped:
		v.State = "stopped"
	default:
		v.State = "running"
	}
	gears, _ := a.o.Service.Gears(app)
	for _, g := range gears {
		if g.Service != "" {
			continue // cartridges are listed apart
		}
		st := a.o.Agent.Status(g.ID)
		v.Gears = append(v.Gears, apitypes.GearView{ID: g.ID, Type: g.Kind(), IP: g.IP, Port: g.Port, State: g.State, Process: st.Status,
			PID: st.PID, Restarts: st.Restarts, LastExit: st.LastExit, Deployment: g.Deployment, Isolation: g.Isolation, Node: g.Node,
			Memory: st.Memory, CPU: st.CPU.Seconds(), OOMKills: st.OOMKills})
	}
	return v
}

func (a *API) registerDomains() {
	huma.Register(a.h, huma.Operation{OperationID: "list-domains", Method: http.MethodGet, Path: "/v1/domains", Security: bearer,
		Summary: "List your domains", Tags: []string{"domains"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.DomainView], error) {
			ds, err := a.o.Service.Domains(userOf(ctx))
			if err != nil {
				return nil, a.internal("listing domains", err)
			}
			out := []apitypes.DomainView{}
			for _, d := range ds {
				out = append(out, apitypes.DomainView{Name: d.Name, Owner: d.Owner, Apps: d.Apps, Created: d.Created})
			}
			return &body[[]apitypes.DomainView]{Body: out}, nil
		})

	type createDomain struct {
		Body apitypes.CreateDomainRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-domain", Method: http.MethodPost, Path: "/v1/domains", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Create a domain", Tags: []string{"domains"}},
		func(ctx context.Context, in *createDomain) (*body[apitypes.DomainView], error) {
			d, err := a.o.Service.CreateDomain(userOf(ctx), in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "creating domain", err)
			}
			return &body[apitypes.DomainView]{Body: apitypes.DomainView{Name: d.Name, Owner: d.Owner, Created: d.Created}}, nil
		})

	type domainRef struct {
		Domain string `path:"domain"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "delete-domain", Method: http.MethodDelete, Path: "/v1/domains/{domain}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Delete an empty domain", Tags: []string{"domains"}},
		func(ctx context.Context, in *domainRef) (*struct{}, error) {
			return nil, asProblem(a, "deleting domain", a.o.Service.DeleteDomain(userOf(ctx), in.Domain))
		})
}

// asProblem turns an error into the API's answer: a problem as it is, a
// service refusal with the status of its kind, anything else an internal
// error (logged, not shown).
func asProblem(a *API, op string, err error) error {
	if err == nil {
		return nil
	}
	var p *apitypes.Problem
	if errors.As(err, &p) {
		return p
	}
	var se *service.Error
	if errors.As(err, &se) {
		return problem(statusOf[se.Kind], se.Code, se.Msg)
	}
	return a.internal(op, err)
}

var statusOf = map[service.Kind]int{
	service.Invalid:   http.StatusBadRequest,
	service.NotFound:  http.StatusNotFound,
	service.Conflict:  http.StatusConflict,
	service.Forbidden: http.StatusForbidden,
	service.Failed:    http.StatusBadGateway,
	service.Limited:   http.StatusTooManyRequests,
}

func (a *API) registerApps() {
	type listApps struct {
		Domain string `query:"domain" doc:"Only apps of this domain"`
		Name   string `query:"name" doc:"Only apps with this name"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "list-apps", Method: http.MethodGet, Path: "/v1/apps", Security: bearer,
		Summary: "List your apps", Tags: []string{"apps"}},
		func(ctx context.Context, in *listApps) (*body[[]apitypes.AppView], error) {
			apps, err := a.o.Service.Apps(userOf(ctx), in.Domain, in.Name)
			if err != nil {
				return nil, a.internal("listing apps", err)
			}
			out := []apitypes.AppView{}
			for i := range apps {
				out = append(out, a.appView(&apps[i]))
			}
			return &body[[]apitypes.AppView]{Body: out}, nil
		})

	type createApp struct {
		Domain string `path:"domain"`
		Body   apitypes.CreateAppRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Create an app",
		Description: "Creates the app and its git repository. With a type, the repository holds starter code of that type, deployed before this returns (the app then serves). Without one the app is empty: the first push of any repository (its own history included) deploys it.",
		Tags:        []string{"apps"}},
		func(ctx context.Context, in *createApp) (*body[apitypes.AppView], error) {
			app, deployErr, err := a.o.Service.CreateApp(ctx, userOf(ctx), in.Domain, in.Body)
			if err != nil {
				return nil, asProblem(a, "creating app", err)
			}
			view := a.appView(app)
			if deployErr != nil {
				view.DeployError = deployErr.Error()
			}
			return &body[apitypes.AppView]{Body: view}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "show-app", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}", Security: bearer,
		Summary: "Show an app", Description: "With its gears, their addresses and process states.", Tags: []string{"apps"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.AppView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "delete-app", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Delete an app", Description: "Stops its gears and removes its repository, deployments, data and logs.", Tags: []string{"apps"}},
		func(ctx context.Context, in *AppRef) (*struct{}, error) {
			return nil, asProblem(a, "deleting app", a.o.Service.DeleteApp(ctx, userOf(ctx), in.Domain, in.App))
		})

	type updateApp struct {
		AppRef
		Body apitypes.UpdateAppRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "update-app", Method: http.MethodPatch, Path: "/v1/domains/{domain}/apps/{app}", Security: bearer,
		Summary: "Change an app's settings", Description: "The gear size applies to running gears without a restart.", Tags: []string{"apps"}},
		func(ctx context.Context, in *updateApp) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.UpdateApp(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "changing the app", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	for _, action := range []string{"start", "stop", "restart"} {
		huma.Register(a.h, huma.Operation{OperationID: action + "-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/" + action, Security: bearer,
			Summary: strings.ToUpper(action[:1]) + action[1:] + " an app", Description: actionDoc[action], Tags: []string{"apps"}},
			func(ctx context.Context, in *AppRef) (*body[apitypes.AppView], error) {
				app, err := a.o.Service.AppAction(ctx, userOf(ctx), in.Domain, in.App, action)
				if err != nil {
					return nil, asProblem(a, action, err)
				}
				return &body[apitypes.AppView]{Body: a.appView(app)}, nil
			})
	}

	huma.Register(a.h, huma.Operation{OperationID: "run-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/runs", Security: bearer,
		Summary: "Run a command in a one-off gear", Description: "A fresh gear with the app's deployed code, env (its databases' too) and isolation runs the command and is removed afterwards; it takes no request. Attached: the answer holds the output (the first MiB) and the exit code. Detached: the answer comes at once, the output goes to the app's logs. An interactive terminal is `gantry run APP` over SSH.", Tags: []string{"apps"}},
		func(ctx context.Context, in *struct {
			AppRef
			Body apitypes.RunRequest
		}) (*body[apitypes.RunView], error) {
			v, err := a.o.Service.Run(ctx, userOf(ctx), in.Domain, in.App, in.Body.Command, in.Body.Detach)
			if err != nil {
				return nil, asProblem(a, "running a command", err)
			}
			return &body[apitypes.RunView]{Body: v}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "purge-cache", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/cache", Security: bearer,
		Summary: "Drop an app's build cache", Description: "The npm, pip and Go caches kept between builds; the next build starts cold.", Tags: []string{"apps"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.CachePurge], error) {
			n, err := a.o.Service.PurgeCache(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "purging the build cache", err)
			}
			return &body[apitypes.CachePurge]{Body: apitypes.CachePurge{Freed: n}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-runtimes", Method: http.MethodGet, Path: "/v1/runtimes", Security: bearer,
		Summary: "Language versions builds choose from", Description: "A build picks the newest that satisfies the app's package.json engines.node, .python-version or runtime.txt, or go.mod go/toolchain line.", Tags: []string{"apps"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.RuntimesView], error) {
			v := apitypes.RuntimesView{Runtimes: []apitypes.RuntimeView{}}
			if a.o.Runtimes != nil {
				rts, problems := a.o.Runtimes()
				for _, r := range rts {
					v.Runtimes = append(v.Runtimes, apitypes.RuntimeView{Language: r.Lang, Version: r.Version, Source: r.Source})
				}
				for _, p := range problems {
					v.Problems = append(v.Problems, p.Error())
				}
			}
			return &body[apitypes.RuntimesView]{Body: v}, nil
		})

	type envOut struct {
		Body map[string]string
	}
	huma.Register(a.h, huma.Operation{OperationID: "get-env", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/env", Security: bearer,
		Summary: "List an app's environment variables", Tags: []string{"env"}},
		func(ctx context.Context, in *AppRef) (*envOut, error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			env := app.Env
			if env == nil {
				env = map[string]string{}
			}
			return &envOut{Body: env}, nil
		})

	type envPatch struct {
		AppRef
		Body apitypes.EnvPatch
	}
	huma.Register(a.h, huma.Operation{OperationID: "update-env", Method: http.MethodPatch, Path: "/v1/domains/{domain}/apps/{app}/env", Security: bearer,
		Summary: "Set and unset environment variables", Description: "A running app restarts with the new environment, without downtime.", Tags: []string{"env"}},
		func(ctx context.Context, in *envPatch) (*envOut, error) {
			env, err := a.o.Service.PatchEnv(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "saving env", err)
			}
			return &envOut{Body: env}, nil
		})
}

var actionDoc = map[string]string{
	"start":   "Starts the app's active deployment.",
	"stop":    "Stops all gears; the router answers 503 until the app starts again.",
	"restart": "Starts new gears and switches to them before stopping the old ones: no request is dropped.",
}

func (a *API) registerDeployments() {
	huma.Register(a.h, huma.Operation{OperationID: "list-deployments", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/deployments", Security: bearer,
		Summary: "List an app's deployments", Description: "Newest first; the active one is marked.", Tags: []string{"deployments"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.DeploymentView], error) {
			app, deps, err := a.o.Service.Deployments(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "listing deployments", err)
			}
			out := []apitypes.DeploymentView{}
			for _, d := range deps {
				out = append(out, apitypes.DeploymentView{ID: d.ID, Commit: d.Commit, Cartridge: d.Type, Runtime: d.Runtime, Created: d.Created, Active: d.ID == app.ActiveDeployment})
			}
			return &body[[]apitypes.DeploymentView]{Body: out}, nil
		})

	type depRef struct {
		AppRef
		ID string `path:"id" doc:"Deployment ID"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "activate-deployment", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/deployments/{id}/activate", Security: bearer,
		Summary: "Activate a deployment (rollback)", Description: "Starts gears of that deployment and switches to them without dropping requests.", Tags: []string{"deployments"}},
		func(ctx context.Context, in *depRef) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.Activate(ctx, userOf(ctx), in.Domain, in.App, in.ID)
			if err != nil {
				return nil, asProblem(a, "activating a deployment", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})
}

func orSmall(size string) string {
	if size == "" {
		return "small"
	}
	return size
}

func (a *API) registerImages() {
	type imageIn struct {
		AppRef
		Body apitypes.ImageRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "deploy-image", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/image", Security: bearer,
		Summary: "Deploy an image from a registry",
		Description: "The image is fetched and unpacked on the server, then rolled out like a build: its ENTRYPOINT and CMD run as PID 1 in a namespaced gear, " +
			"its user mapped onto the app's own, on the port it EXPOSEs (or $PORT). A failure leaves the app as it was.",
		Tags: []string{"apps"}},
		func(ctx context.Context, in *imageIn) (*body[apitypes.DeployResult], error) {
			app, out, err := a.o.Service.DeployImage(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "deploying an image", err)
			}
			return &body[apitypes.DeployResult]{Body: apitypes.DeployResult{App: a.appView(app), Output: out}}, nil
		})
}
