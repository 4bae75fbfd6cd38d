package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/service"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/builder"
	"github.com/gantry-paas/gantry/internal/control/gitrepo"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

type AppRef struct {
	Domain string `path:"domain" doc:"Domain name"`
	App    string `path:"app" doc:"App name"`
}

func (r AppRef) key() string { return store.AppKey(r.Domain, r.App) }

// loadApp returns the caller's app, or a not-found problem for apps that
// do not exist and for other users' apps alike (no existence leak).
func (a *API) loadApp(ctx context.Context, r AppRef) (*store.App, error) {
	var app store.App
	err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(r.key(), &app) })
	if errors.Is(err, store.ErrBusy) {
		return nil, a.internal("loading an app", err)
	}
	if err != nil || app.Owner != userOf(ctx).Name {
		return nil, notFound("app_not_found", fmt.Sprintf("you have no app %q in domain %q: see `gantry app list`", r.App, r.Domain))
	}
	return &app, nil
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
	a.o.Store.View(func(tx *store.Tx) error {
		gears, _ := store.ListGears(tx)
		for _, g := range gears {
			if g.AppID != app.ID || g.Service != "" {
				continue // cartridges are listed apart
			}
			st := a.o.Agent.Status(g.ID)
			v.Gears = append(v.Gears, apitypes.GearView{ID: g.ID, IP: g.IP, Port: g.Port, State: g.State, Process: st.Status,
				PID: st.PID, Restarts: st.Restarts, LastExit: st.LastExit, Deployment: g.Deployment, Isolation: g.Isolation})
		}
		return nil
	})
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
}

func (a *API) registerApps() {
	type listApps struct {
		Domain string `query:"domain" doc:"Only apps of this domain"`
		Name   string `query:"name" doc:"Only apps with this name"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "list-apps", Method: http.MethodGet, Path: "/v1/apps", Security: bearer,
		Summary: "List your apps", Tags: []string{"apps"}},
		func(ctx context.Context, in *listApps) (*body[[]apitypes.AppView], error) {
			u := userOf(ctx)
			var apps []store.App
			err := a.o.Store.View(func(tx *store.Tx) error {
				var err error
				apps, err = store.ListApps(tx)
				return err
			})
			if err != nil {
				return nil, a.internal("listing apps", err)
			}
			out := []apitypes.AppView{}
			for i := range apps {
				ap := &apps[i]
				if ap.Owner != u.Name || (in.Domain != "" && ap.Domain != in.Domain) || (in.Name != "" && ap.Name != in.Name) {
					continue
				}
				out = append(out, a.appView(ap))
			}
			return &body[[]apitypes.AppView]{Body: out}, nil
		})

	type createApp struct {
		Domain string `path:"domain"`
		Body   apitypes.CreateAppRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Create an app",
		Description: "Creates the app and its git repository holding starter code for its type, and deploys that code. Returns when the app serves.",
		Tags:        []string{"apps"}},
		func(ctx context.Context, in *createApp) (*body[apitypes.AppView], error) {
			return a.createApp(ctx, in.Domain, in.Body.Name, in.Body.Type, in.Body.Scale, in.Body.Branch, in.Body.Size, in.Body.Scalable)
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
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			if err := a.o.Agent.Delete(ctx, app.Key()); err != nil {
				return nil, a.internal("stopping gears", err)
			}
			err = a.o.Store.Update(func(tx *store.Tx) error {
				deps, err := store.ListDeployments(tx, app.ID)
				if err != nil {
					return err
				}
				for _, d := range deps {
					tx.Delete(store.DeploymentKey(app.ID, d.ID))
				}
				tx.Delete(store.HostKey(app.Host))
				if err := deleteRoutes(tx, app.Key()); err != nil {
					return err
				}
				return tx.Delete(app.Key())
			})
			if err != nil {
				return nil, a.internal("deleting app", err)
			}
			if err := a.o.Agent.RemoveAppDir(app); err != nil {
				a.log.Error("removing the app's directory", "app", app.FullName(), "err", err)
			}
			a.log.Info("app deleted", "app", app.FullName(), "user", userOf(ctx).Name)
			return nil, nil
		})

	type updateApp struct {
		AppRef
		Body apitypes.UpdateAppRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "update-app", Method: http.MethodPatch, Path: "/v1/domains/{domain}/apps/{app}", Security: bearer,
		Summary: "Change an app's settings", Description: "The gear size applies to running gears without a restart.", Tags: []string{"apps"}},
		func(ctx context.Context, in *updateApp) (*body[apitypes.AppView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			if in.Body.Size != "" {
				err := a.o.Store.Update(func(tx *store.Tx) error {
					if err := tx.Get(app.Key(), app); err != nil {
						return err
					}
					app.GearSize = in.Body.Size
					return tx.Put(app.Key(), app)
				})
				if err != nil {
					return nil, a.internal("saving gear size", err)
				}
				if err := a.o.Agent.Resize(ctx, app.Key()); err != nil {
					return nil, a.internal("resizing gears", err)
				}
				a.log.Info("gear size changed", "app", app.FullName(), "size", in.Body.Size)
			}
			b := in.Body
			if b.HTTPS != "" || b.ConnectTimeout != "" || b.ReadTimeout != "" || b.TunnelTimeout != "" {
				var durs [3]time.Duration
				for i, d := range []struct{ name, v string }{{"connect-timeout", b.ConnectTimeout}, {"read-timeout", b.ReadTimeout}, {"tunnel-timeout", b.TunnelTimeout}} {
					if d.v == "" || d.v == "default" {
						continue
					}
					v, err := time.ParseDuration(d.v)
					if err != nil || v < 100*time.Millisecond || v > 7*24*time.Hour {
						return nil, invalid(fmt.Sprintf("--%s %q is not a duration between 100ms and 168h: use e.g. 5s, 2m, 1h, or default", d.name, d.v))
					}
					durs[i] = v
				}
				err := a.o.Store.Update(func(tx *store.Tx) error {
					if err := tx.Get(app.Key(), app); err != nil {
						return err
					}
					if b.HTTPS != "" {
						app.HTTPS = b.HTTPS
					}
					for i, p := range []*time.Duration{&app.ConnectTimeout, &app.ReadTimeout, &app.TunnelTimeout} {
						if v := []string{b.ConnectTimeout, b.ReadTimeout, b.TunnelTimeout}[i]; v != "" {
							*p = durs[i]
						}
					}
					return tx.Put(app.Key(), app)
				})
				if err != nil {
					return nil, a.internal("saving routing settings", err)
				}
				a.log.Info("routing settings changed", "app", app.FullName(), "https", app.HTTPS, "user", userOf(ctx).Name)
				a.inForce(ctx)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})

	for _, action := range []string{"start", "stop", "restart"} {
		huma.Register(a.h, huma.Operation{OperationID: action + "-app", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/" + action, Security: bearer,
			Summary: strings.ToUpper(action[:1]) + action[1:] + " an app", Description: actionDoc[action], Tags: []string{"apps"}},
			func(ctx context.Context, in *AppRef) (*body[apitypes.AppView], error) {
				return a.appAction(ctx, *in, action)
			})
	}

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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			env := map[string]string{}
			for k, v := range app.Env {
				env[k] = v
			}
			for k, v := range in.Body.Set {
				env[k] = v
			}
			for _, k := range in.Body.Unset {
				if _, ok := env[k]; !ok {
					return nil, invalid(fmt.Sprintf("%s is not set", k))
				}
				delete(env, k)
			}
			if err := names.Env(in.Body.Set); err != nil {
				return nil, invalid(err.Error())
			}
			if err := names.Env(env); err != nil {
				return nil, invalid(err.Error())
			}
			err = a.o.Store.Update(func(tx *store.Tx) error {
				var cur store.App
				if err := tx.Get(app.Key(), &cur); err != nil {
					return err
				}
				cur.Env = env
				*app = cur
				return tx.Put(app.Key(), &cur)
			})
			if err != nil {
				return nil, a.internal("saving env", err)
			}
			a.log.Info("env changed", "app", app.FullName(), "set", keys(in.Body.Set), "unset", in.Body.Unset)
			if app.ActiveDeployment != "" && !app.Stopped {
				var out bytes.Buffer
				if err := a.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
					return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, "saved, but the app did not restart with the new environment: "+err.Error())
				}
			}
			return &envOut{Body: env}, nil
		})
}

var actionDoc = map[string]string{
	"start":   "Starts the app's active deployment.",
	"stop":    "Stops all gears; the router answers 503 until the app starts again.",
	"restart": "Starts new gears and switches to them before stopping the old ones: no request is dropped.",
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (a *API) appAction(ctx context.Context, in AppRef, action string) (*body[apitypes.AppView], error) {
	app, err := a.loadApp(ctx, in)
	if err != nil {
		return nil, err
	}
	switch action {
	case "stop":
		err = a.o.Agent.Stop(ctx, app.Key())
	default:
		if app.ActiveDeployment == "" {
			return nil, problem(http.StatusConflict, apitypes.CodeNothingRunning, "nothing is deployed yet: push code with `git push` first")
		}
		var out bytes.Buffer
		if err = a.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
			return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, fmt.Sprintf("the app did not %s: %v", action, err))
		}
	}
	if err != nil {
		return nil, a.internal(action, err)
	}
	app, err = a.loadApp(ctx, in)
	if err != nil {
		return nil, err
	}
	a.log.Info("app "+action, "app", app.FullName(), "user", userOf(ctx).Name)
	return &body[apitypes.AppView]{Body: a.appView(app)}, nil
}

func (a *API) createApp(ctx context.Context, domain, name, typ string, scale int, branch, size string, scalable bool) (*body[apitypes.AppView], error) {
	u := userOf(ctx)
	if err := names.Label("app", name); err != nil {
		return nil, invalid(err.Error())
	}
	if !slices.Contains(builder.Types, typ) {
		return nil, invalid(fmt.Sprintf("unknown app type %q: choose one of %s", typ, strings.Join(builder.Types, ", ")))
	}
	if branch == "" {
		branch = "main"
	}
	if scale == 0 {
		scale = 1
	}
	host, err := names.CanonicalHost(name, domain, a.o.CloudDomain)
	if err != nil {
		return nil, invalid(err.Error())
	}
	id := make([]byte, 8)
	rand.Read(id)
	app := store.App{ID: hex.EncodeToString(id), Name: name, Domain: domain, Owner: u.Name, Type: typ, Host: host,
		Scale: scale, Branch: branch, GearSize: orSmall(size), KeepDeployments: 3, Created: time.Now().UTC(),
		MinGears: scale, MaxGears: scale}
	if scalable {
		app.MinGears, app.MaxGears = 1, 3
	}
	if scale > a.o.MaxGears {
		return nil, invalid(fmt.Sprintf("%d gears is above this platform's limit of %d per app", scale, a.o.MaxGears))
	}
	err = a.o.Store.Update(func(tx *store.Tx) error {
		var d store.Domain
		if err := tx.Get(store.DomainKey(domain), &d); err != nil || d.Owner != u.Name {
			return notFound("domain_not_found", fmt.Sprintf("you have no domain %q: create it with `gantry domain create %s`", domain, domain))
		}
		if ok, _ := tx.Has(app.Key()); ok {
			return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("domain %q already has an app named %q", domain, name))
		}
		if err := tx.Create(store.HostKey(host), &store.Host{Name: host, AppKey: app.Key()}); err != nil {
			return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use: choose another app name", host))
		}
		return tx.Create(app.Key(), &app)
	})
	if err != nil {
		return nil, asProblem(a, "creating app", err)
	}
	files, err := builder.Starter(typ, name)
	if err == nil {
		if err = a.o.Agent.PrepareAppDir(&app); err == nil {
			err = gitrepo.Init(ctx, a.o.Layout.Repo(app.ID), branch, files, a.o.Exe)
		}
	}
	if err != nil {
		a.o.Store.Update(func(tx *store.Tx) error { tx.Delete(store.HostKey(host)); return tx.Delete(app.Key()) })
		a.o.Agent.RemoveAppDir(&app)
		return nil, a.internal("creating repository", err)
	}
	a.log.Info("app created", "app", app.FullName(), "type", typ, "user", u.Name)
	view := apitypes.AppView{}
	var out bytes.Buffer
	head, err := gitrepo.Head(ctx, a.o.Layout.Repo(app.ID), branch)
	if err == nil {
		err = a.o.Builder.Deploy(ctx, app.Key(), head, nil, &out)
	}
	if cur, lerr := a.loadApp(ctx, AppRef{Domain: domain, App: name}); lerr == nil {
		view = a.appView(cur)
	}
	if err != nil {
		a.log.Warn("starter deploy failed", "app", app.FullName(), "err", err)
		view.DeployError = err.Error()
	}
	return &body[apitypes.AppView]{Body: view}, nil
}

func (a *API) registerDeployments() {
	huma.Register(a.h, huma.Operation{OperationID: "list-deployments", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/deployments", Security: bearer,
		Summary: "List an app's deployments", Description: "Newest first; the active one is marked.", Tags: []string{"deployments"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.DeploymentView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			var deps []store.Deployment
			a.o.Store.View(func(tx *store.Tx) error {
				deps, err = store.ListDeployments(tx, app.ID)
				return err
			})
			sort.Slice(deps, func(i, j int) bool { return deps[i].Created.After(deps[j].Created) })
			out := []apitypes.DeploymentView{}
			for _, d := range deps {
				out = append(out, apitypes.DeploymentView{ID: d.ID, Commit: d.Commit, Cartridge: d.Type, Created: d.Created, Active: d.ID == app.ActiveDeployment})
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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			var dep store.Deployment
			if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, in.ID), &dep) }); err != nil {
				return nil, notFound("deployment_not_found", fmt.Sprintf("app %s has no deployment %q: see `gantry deployment list %s`", app.Name, in.ID, app.Name))
			}
			var out bytes.Buffer
			if err := a.o.Agent.Rollout(ctx, app.Key(), dep.ID, &out); err != nil {
				return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, "the deployment did not start; the app is unchanged: "+err.Error())
			}
			app, _ = a.loadApp(ctx, in.AppRef)
			a.log.Info("deployment activated", "app", app.FullName(), "deployment", dep.ID)
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})
}

func orSmall(size string) string {
	if size == "" {
		return "small"
	}
	return size
}
