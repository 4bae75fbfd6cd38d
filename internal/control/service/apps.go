package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/builder"
	"github.com/gantry-paas/gantry/internal/control/events"
	"github.com/gantry-paas/gantry/internal/control/gitrepo"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// App returns the caller's app, refusing alike apps that do not exist and
// other users' apps (no existence leak).
func (s *Service) App(caller *store.User, domain, name string) (*store.App, error) {
	var app store.App
	err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.AppKey(domain, name), &app) })
	if errors.Is(err, store.ErrBusy) {
		return nil, err
	}
	if err != nil || app.Owner != caller.Name {
		return nil, refuse(NotFound, "app_not_found", fmt.Sprintf("you have no app %q in domain %q: see `gantry app list`", name, domain))
	}
	return &app, nil
}

// Apps lists the caller's apps, of one domain and with one name if given.
func (s *Service) Apps(caller *store.User, domain, name string) ([]store.App, error) {
	var all []store.App
	err := s.st.View(func(tx *store.Tx) error {
		var err error
		all, err = store.ListApps(tx)
		return err
	})
	var out []store.App
	for _, ap := range all {
		if ap.Owner == caller.Name && (domain == "" || ap.Domain == domain) && (name == "" || ap.Name == name) {
			out = append(out, ap)
		}
	}
	return out, err
}

// CreateApp creates an app of the caller's domain. With a type its
// repository holds starter code of that type, deployed at once (a failed
// deploy leaves the app created: deployErr says why it does not serve);
// without, the repository is empty and the first push deploys.
func (s *Service) CreateApp(ctx context.Context, caller *store.User, domain string, req apitypes.CreateAppRequest) (app *store.App, deployErr, err error) {
	if err := names.Label("app", req.Name); err != nil {
		return nil, nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if req.Type != "" && req.Image != "" {
		return nil, nil, refuse(Invalid, apitypes.CodeInvalid, "pass either --type (starter code) or --image, not both")
	}
	if req.Image != "" && s.o.Images == nil {
		return nil, nil, refuse(Conflict, apitypes.CodeConflict, "this server cannot deploy images")
	}
	if req.Type != "" && !slices.Contains(builder.Types, req.Type) {
		return nil, nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("unknown app type %q: choose one of %s", req.Type, strings.Join(builder.Types, ", ")))
	}
	branch, scale, size := req.Branch, req.Scale, req.Size
	if branch == "" {
		branch = "main"
	}
	if scale == 0 {
		scale = 1
	}
	if size == "" {
		size = "small"
	}
	host, err := names.CanonicalHost(req.Name, domain, s.o.CloudDomain)
	if err != nil {
		return nil, nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	id := make([]byte, 8)
	rand.Read(id)
	a := store.App{ID: hex.EncodeToString(id), Name: req.Name, Domain: domain, Owner: caller.Name, Type: req.Type, Host: host,
		Scale: scale, Branch: branch, GearSize: size, KeepDeployments: 3, Created: time.Now().UTC(),
		MinGears: scale, MaxGears: scale}
	if req.Scalable {
		a.MinGears, a.MaxGears = 1, 3
	}
	if scale > s.o.MaxGears {
		return nil, nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%d gears is above this platform's limit of %d per app", scale, s.o.MaxGears))
	}
	err = s.st.Update(func(tx *store.Tx) error {
		var d store.Domain
		if err := tx.Get(store.DomainKey(domain), &d); err != nil || d.Owner != caller.Name {
			return refuse(NotFound, "domain_not_found", fmt.Sprintf("you have no domain %q: create it with `gantry domain create %s`", domain, domain))
		}
		if ok, _ := tx.Has(a.Key()); ok {
			return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("domain %q already has an app named %q", domain, req.Name))
		}
		if err := tx.Create(store.HostKey(host), &store.Host{Name: host, AppKey: a.Key()}); err != nil {
			return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use: choose another app name", host))
		}
		return tx.Create(a.Key(), &a)
	})
	if err != nil {
		return nil, nil, err
	}
	var files map[string]gitrepo.File
	if req.Type != "" {
		files, err = builder.Starter(req.Type, req.Name)
	}
	if err == nil {
		if err = s.o.Agent.PrepareAppDir(&a); err == nil {
			err = gitrepo.Init(ctx, s.o.Layout.Repo(a.ID), branch, files, s.o.Exe)
		}
	}
	if err != nil {
		s.st.Update(func(tx *store.Tx) error { tx.Delete(store.HostKey(host)); return tx.Delete(a.Key()) })
		s.o.Agent.RemoveAppDir(&a)
		return nil, nil, fmt.Errorf("creating repository: %w", err)
	}
	s.log.Info("app created", "app", a.FullName(), "type", req.Type, "user", caller.Name)
	if req.Image != "" {
		// Its first deploy is the image; if that fails, no app is left.
		var out bytes.Buffer
		ireq := apitypes.ImageRequest{Image: req.Image, RegistryUsername: req.RegistryUsername, RegistryPassword: req.RegistryPassword}
		if err := s.o.Images.DeployImage(ctx, a.Key(), strings.TrimSpace(req.Image), registryLogin(ireq), &out); err != nil {
			s.DeleteApp(context.WithoutCancel(ctx), caller, domain, req.Name)
			return nil, nil, refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("the image did not deploy, and the app was not created: %v", err))
		}
		cur, err := s.App(caller, domain, req.Name)
		return cur, nil, err
	}
	if req.Type == "" { // empty: its first push deploys
		cur, err := s.App(caller, domain, req.Name)
		return cur, nil, err
	}
	var out bytes.Buffer
	head, deployErr := gitrepo.Head(ctx, s.o.Layout.Repo(a.ID), branch)
	if deployErr == nil {
		deployErr = s.o.Builder.Deploy(ctx, a.Key(), head, nil, &out)
	}
	if deployErr != nil {
		s.log.Warn("starter deploy failed", "app", a.FullName(), "err", deployErr)
	}
	cur, err := s.App(caller, domain, req.Name)
	if err != nil {
		return nil, deployErr, err
	}
	return cur, deployErr, nil
}

// DeleteApp stops an app's gears and removes it with its deployments,
// routes, repository, data and logs.
func (s *Service) DeleteApp(ctx context.Context, caller *store.User, domain, name string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	if err := s.o.Agent.Delete(ctx, app.Key()); err != nil {
		return fmt.Errorf("stopping gears: %w", err)
	}
	err = s.st.Update(func(tx *store.Tx) error {
		deps, err := store.ListDeployments(tx, app.ID)
		if err != nil {
			return err
		}
		for _, d := range deps {
			tx.Delete(store.DeploymentKey(app.ID, d.ID))
		}
		tx.Delete(store.HostKey(app.Host))
		if err := store.DeleteCron(tx, app.ID); err != nil {
			return err
		}
		if err := DeleteRoutes(tx, app.Key()); err != nil {
			return err
		}
		return tx.Delete(app.Key())
	})
	if err != nil {
		return err
	}
	if err := s.o.Agent.RemoveAppDir(app); err != nil {
		s.log.Error("removing the app's directory", "app", app.FullName(), "err", err)
	}
	s.log.Info("app deleted", "app", app.FullName(), "user", caller.Name)
	return nil
}

// DeleteRoutes removes an app's aliases, certificates and TCP routes with
// their host reservations.
func DeleteRoutes(tx *store.Tx, appKey string) error {
	als, err := store.ListAliases(tx)
	if err != nil {
		return err
	}
	for _, al := range als {
		if al.AppKey == appKey {
			tx.Delete(store.CertKey(al.Host))
			tx.Delete(store.HostKey(al.Host))
			tx.Delete(store.AliasKey(al.Host))
		}
	}
	rs, err := store.ListTCPRoutes(tx)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.AppKey == appKey {
			if r.SNI != "" {
				tx.Delete(store.HostKey(r.SNI))
			}
			tx.Delete(r.Key())
		}
	}
	return nil
}

// UpdateApp changes an app's gear size (applied to running gears at once),
// HTTPS mode and router timeouts; empty fields stay.
func (s *Service) UpdateApp(ctx context.Context, caller *store.User, domain, name string, req apitypes.UpdateAppRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if req.Size != "" {
		err := s.st.Update(func(tx *store.Tx) error {
			if err := tx.Get(app.Key(), app); err != nil {
				return err
			}
			app.GearSize = req.Size
			return tx.Put(app.Key(), app)
		})
		if err != nil {
			return nil, fmt.Errorf("saving gear size: %w", err)
		}
		if err := s.o.Agent.Resize(ctx, app.Key()); err != nil {
			return nil, fmt.Errorf("resizing gears: %w", err)
		}
		s.log.Info("gear size changed", "app", app.FullName(), "size", req.Size)
	}
	if req.Registry != "" {
		var login *store.RegistryLogin
		switch {
		case req.Registry == "-":
		case req.RegistryUsername == "":
			return nil, refuse(Invalid, apitypes.CodeInvalid, "a registry login needs --registry-username (and the password on stdin)")
		default:
			login = &store.RegistryLogin{Registry: req.Registry, Username: req.RegistryUsername, Password: req.RegistryPassword}
		}
		err := s.st.Update(func(tx *store.Tx) error {
			if err := tx.Get(app.Key(), app); err != nil {
				return err
			}
			app.Registry = login
			return tx.Put(app.Key(), app)
		})
		if err != nil {
			return nil, fmt.Errorf("saving the registry login: %w", err)
		}
		s.log.Info("registry login changed", "app", app.FullName(), "registry", req.Registry, "user", caller.Name)
	}
	if req.StopGrace != "" {
		d, err := time.ParseDuration(req.StopGrace)
		if req.StopGrace == "default" {
			d, err = 0, nil
		} else if err != nil || d < time.Second || d > time.Hour {
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("--stop-grace %q is not a duration between 1s and 1h: use e.g. 30s, 5m, or default", req.StopGrace))
		}
		err = s.st.Update(func(tx *store.Tx) error {
			if err := tx.Get(app.Key(), app); err != nil {
				return err
			}
			app.StopGrace = d
			return tx.Put(app.Key(), app)
		})
		if err != nil {
			return nil, fmt.Errorf("saving the stop grace time: %w", err)
		}
		s.log.Info("stop grace changed", "app", app.FullName(), "grace", app.Grace())
	}
	if req.HTTPS == "" && req.ConnectTimeout == "" && req.ReadTimeout == "" && req.TunnelTimeout == "" {
		return app, nil
	}
	var durs [3]time.Duration
	for i, d := range []struct{ name, v string }{{"connect-timeout", req.ConnectTimeout}, {"read-timeout", req.ReadTimeout}, {"tunnel-timeout", req.TunnelTimeout}} {
		if d.v == "" || d.v == "default" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v < 100*time.Millisecond || v > 7*24*time.Hour {
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("--%s %q is not a duration between 100ms and 168h: use e.g. 5s, 2m, 1h, or default", d.name, d.v))
		}
		durs[i] = v
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		if req.HTTPS != "" {
			app.HTTPS = req.HTTPS
		}
		for i, p := range []*time.Duration{&app.ConnectTimeout, &app.ReadTimeout, &app.TunnelTimeout} {
			if v := []string{req.ConnectTimeout, req.ReadTimeout, req.TunnelTimeout}[i]; v != "" {
				*p = durs[i]
			}
		}
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, fmt.Errorf("saving routing settings: %w", err)
	}
	s.log.Info("routing settings changed", "app", app.FullName(), "https", app.HTTPS, "user", caller.Name)
	s.inForce(ctx)
	return app, nil
}

// AppAction starts, stops or restarts an app; a start or restart rolls
// out the active deployment without dropping a request.
func (s *Service) AppAction(ctx context.Context, caller *store.User, domain, name, action string) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	switch action {
	case "stop":
		if err := s.o.Agent.Stop(ctx, app.Key()); err != nil {
			return nil, fmt.Errorf("stop: %w", err)
		}
	default:
		if app.ActiveDeployment == "" {
			return nil, refuse(Conflict, apitypes.CodeNothingRunning, "nothing is deployed yet: push code with `git push` first")
		}
		var out bytes.Buffer
		if err := s.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("the app did not %s: %v", action, err))
		}
	}
	s.log.Info("app "+action, "app", app.FullName(), "user", caller.Name)
	return s.App(caller, domain, name)
}

// PatchEnv sets and unsets an app's variables; a running app restarts
// with them without downtime.
func (s *Service) PatchEnv(ctx context.Context, caller *store.User, domain, name string, p apitypes.EnvPatch) (map[string]string, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for k, v := range app.Env {
		env[k] = v
	}
	for k, v := range p.Set {
		env[k] = v
	}
	for _, k := range p.Unset {
		if _, ok := env[k]; !ok {
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%s is not set", k))
		}
		delete(env, k)
	}
	if err := names.Env(p.Set); err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if err := names.Env(env); err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	err = s.st.Update(func(tx *store.Tx) error {
		var cur store.App
		if err := tx.Get(app.Key(), &cur); err != nil {
			return err
		}
		cur.Env = env
		*app = cur
		return tx.Put(app.Key(), &cur)
	})
	if err != nil {
		return nil, fmt.Errorf("saving env: %w", err)
	}
	s.log.Info("env changed", "app", app.FullName(), "set", sortedKeys(p.Set), "unset", p.Unset)
	if app.ActiveDeployment != "" && !app.Stopped {
		var out bytes.Buffer
		if err := s.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "saved, but the app did not restart with the new environment: "+err.Error())
		}
	}
	return env, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Deployments lists an app's deployments, newest first.
func (s *Service) Deployments(caller *store.User, domain, name string) (*store.App, []store.Deployment, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, nil, err
	}
	var deps []store.Deployment
	err = s.st.View(func(tx *store.Tx) error {
		deps, err = store.ListDeployments(tx, app.ID)
		return err
	})
	sort.Slice(deps, func(i, j int) bool { return deps[i].Created.After(deps[j].Created) })
	return app, deps, err
}

// Activate makes a kept deployment the running one (a rollback), without
// dropping a request; if its gears do not start, nothing changes.
func (s *Service) Activate(ctx context.Context, caller *store.User, domain, name, depID string) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	var dep store.Deployment
	if err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, depID), &dep) }); err != nil {
		return nil, refuse(NotFound, "deployment_not_found", fmt.Sprintf("app %s has no deployment %q: see `gantry deployment list %s`", app.Name, depID, app.Name))
	}
	var out bytes.Buffer
	if err := s.o.Agent.Rollout(ctx, app.Key(), dep.ID, &out); err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the deployment did not start; the app is unchanged: "+err.Error())
	}
	s.log.Info("deployment activated", "app", app.FullName(), "deployment", dep.ID)
	return s.App(caller, domain, name)
}

// Formation is how many gears each non-web process type of the app's
// active deployment runs, and the deployment's process types (web
// first).
func (s *Service) Formation(app *store.App) (map[string]int, []string, time.Time) {
	var dep store.Deployment
	if app.ActiveDeployment == "" || s.st.View(func(tx *store.Tx) error {
		return tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep)
	}) != nil {
		return nil, nil, time.Time{}
	}
	return store.Formation(app, &dep), append([]string{"web"}, sortedKeys(dep.Processes)...), dep.Created
}

// Gears lists an app's gears (its cartridges' too).
func (s *Service) Gears(app *store.App) ([]store.Gear, error) {
	var out []store.Gear
	err := s.st.View(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			if g.AppID == app.ID {
				out = append(out, g)
			}
		}
		return err
	})
	return out, err
}

// Events lists an app's events, oldest first.
func (s *Service) Events(app *store.App) ([]store.Event, error) {
	return events.List(s.st, app.ID)
}

// RotateKey seals every secret with a new platform key (admins only) and
// returns how many were resealed and the key file.
func (s *Service) RotateKey(caller *store.User) (int, string, error) {
	if !caller.Admin {
		return 0, "", refuse(Forbidden, apitypes.CodeForbidden, "rotating the platform key needs an admin token")
	}
	n, err := s.st.RotateKey()
	if err != nil {
		return 0, "", fmt.Errorf("rotating the platform key: %w", err)
	}
	s.log.Info("platform key rotated", "resealed", n, "user", caller.Name)
	return n, s.st.KeyFile(), nil
}

// PurgeCache drops the app's build cache (npm, pip, Go build and module
// caches); the next build starts cold.
func (s *Service) PurgeCache(caller *store.User, domain, name string) (int64, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return 0, err
	}
	n, err := s.o.Agent.PurgeCache(app)
	if err != nil {
		return 0, fmt.Errorf("purging the build cache: %w", err)
	}
	s.log.Info("build cache purged", "app", app.FullName(), "bytes", n, "user", caller.Name)
	return n, nil
}

// maxRunOutput bounds what an attached run over the API gives back.
const maxRunOutput = 1 << 20

// Run runs a command in a one-off gear of the caller's app (gantry run
// over the API): attached, its output (the first MiB) and exit code;
// detached, the gear at once, its output in the app's logs.
func (s *Service) Run(ctx context.Context, caller *store.User, domain, name, command string, detach bool) (apitypes.RunView, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return apitypes.RunView{}, err
	}
	if strings.TrimSpace(command) == "" {
		return apitypes.RunView{}, refuse(Invalid, apitypes.CodeInvalid, "give the command to run (an interactive shell is `gantry run APP` over SSH)")
	}
	if app.ActiveDeployment == "" {
		return apitypes.RunView{}, refuse(Conflict, apitypes.CodeNothingRunning, app.FullName()+" has nothing deployed yet: push code first")
	}
	out := &boundedBuffer{max: maxRunOutput}
	id, code, err := s.o.Agent.RunCommand(ctx, app.Key(), command, detach, out)
	if err != nil {
		return apitypes.RunView{}, refuse(Failed, apitypes.CodeInternal, "the one-off run: "+err.Error())
	}
	s.log.Info("one-off run", "app", app.FullName(), "gear", id, "detached", detach, "user", caller.Name)
	v := apitypes.RunView{Gear: id, Detached: detach}
	if !detach {
		v.ExitCode, v.Output, v.Truncated = &code, out.String(), out.dropped > 0
	}
	return v, nil
}

// boundedBuffer keeps the first max bytes written and counts the rest.
type boundedBuffer struct {
	strings.Builder
	max     int
	dropped int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.dropped += len(p) - max(room, 0)
		if room > 0 {
			b.Builder.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Builder.Write(p)
}

// DeployImage deploys an image to an app (`gantry app deploy APP --image
// REF`); a login given replaces the stored one once it works. It returns
// the deploy's output; a failure leaves the app as it was.
func (s *Service) DeployImage(ctx context.Context, caller *store.User, domain, name string, req apitypes.ImageRequest) (*store.App, string, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, "", err
	}
	if strings.TrimSpace(req.Image) == "" {
		return nil, "", refuse(Invalid, apitypes.CodeInvalid, "name the image: --image registry.example.com/team/web:1.4")
	}
	if s.o.Images == nil {
		return nil, "", refuse(Conflict, apitypes.CodeConflict, "this server cannot deploy images")
	}
	var out bytes.Buffer
	if err := s.o.Images.DeployImage(ctx, app.Key(), strings.TrimSpace(req.Image), registryLogin(req), &out); err != nil {
		return nil, out.String(), refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("the image did not deploy; the app is as it was: %v", err))
	}
	s.log.Info("image deployed", "app", app.FullName(), "image", req.Image, "user", caller.Name)
	app, err = s.App(caller, domain, name)
	return app, out.String(), err
}

// registryLogin is a request's login to its image's registry (nil: none
// given).
func registryLogin(req apitypes.ImageRequest) *store.RegistryLogin {
	if req.RegistryUsername == "" {
		return nil
	}
	host, _, _ := strings.Cut(req.Image, "/")
	return &store.RegistryLogin{Registry: host, Username: req.RegistryUsername, Password: req.RegistryPassword}
}
