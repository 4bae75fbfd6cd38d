// Package builder turns a pushed commit into a running deployment: it checks
// the commit out, detects the app type, runs the build and the app's action
// hooks in OpenShift order, records the deployment and hands it to the
// deployer (the agent) for a zero-downtime rollout. Output streams to the
// pusher as it happens.
//
// Pushes reach the builder through the repositories' pre-receive hook, which
// connects to the builder's Unix socket: a failed build rejects the push, so
// the branch never moves to a commit that is not running. The builder must
// not start or stop processes itself other than build steps and hooks.
package builder

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/artifact"
	"github.com/gantry-paas/gantry/internal/node/runtimes"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/keylock"
	"github.com/gantry-paas/gantry/internal/layout"
)

// Deployer rolls a recorded deployment out.
type Deployer interface {
	Rollout(ctx context.Context, appKey, depID string, out io.Writer) error
	// Release runs the release command of a deployment not live yet in a
	// one-off gear of it, its output to out, and returns its exit code.
	Release(ctx context.Context, appKey, depID, command string, out io.Writer) (int, error)
	// PrepareImage fetches an image and unpacks it into dir for the app.
	PrepareImage(ctx context.Context, appKey, dir, ref string, login *store.RegistryLogin, out io.Writer) (store.Image, error)
	// BuildDockerfile builds src's Dockerfile into an image unpacked in
	// dest for the app.
	BuildDockerfile(ctx context.Context, appKey, src, dest, dockerfile string, out io.Writer) (store.Image, error)
}

// Options configure a Builder.
type Options struct {
	Store    *store.Store
	Layout   layout.Layout
	Log      *slog.Logger
	Deployer Deployer
	// Node is this machine (deployments name where they were built).
	Node string
	// Artifacts, when set (a cluster), keeps each build packed under its
	// digest, for the other machines to fetch.
	Artifacts *artifact.Cache
	// StaticServer is the command that serves a static site on $PORT.
	StaticServer string
	// Env is the environment of build steps and hooks for an app.
	Env func(app *store.App, dir, appType string) []string
	// Runtimes, if set, lists the language versions there are; the build
	// picks the one the app asks for (package.json engines,
	// .python-version, go.mod).
	Runtimes func() []runtimes.Runtime
	// FetchGo fetches a Go version into the runtimes directory (nil: go
	// fetches what go.mod names into each app's build cache).
	FetchGo func(ctx context.Context, version string) (tree string, err error)
	// URL is the public URL of an app, printed at the end of a deploy.
	URL func(app *store.App) string
	// StepTimeout bounds each build step and hook.
	StepTimeout time.Duration
	// MaxPushBytes is the largest pack a push may send (DefaultMaxPush).
	MaxPushBytes int64
	// Run runs a build step or hook of an app (sandboxed when gears are);
	// default: RunCommand on the host.
	Run func(ctx context.Context, appKey, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error
}

// Builder builds and deploys commits.
type Builder struct {
	o     Options
	log   *slog.Logger
	locks keylock.Locks // one per app
	mu    sync.Mutex    // guards push
	push  map[string]pushGrant
}

type pushGrant struct {
	user, appKey string
}

// New validates the options.
func New(o Options) (*Builder, error) {
	if o.Store == nil || o.Layout.Root == "" || o.Deployer == nil || o.Env == nil || o.URL == nil {
		return nil, errors.New("builder: Store, Layout, Deployer, Env and URL are required")
	}
	if o.StepTimeout == 0 {
		o.StepTimeout = 15 * time.Minute
	}
	if o.MaxPushBytes == 0 {
		o.MaxPushBytes = DefaultMaxPush
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Run == nil {
		o.Run = func(ctx context.Context, _ string, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error {
			return RunCommand(ctx, dir, env, out, timeout, args...)
		}
	}
	return &Builder{o: o, log: o.Log.With("component", "builder"), push: map[string]pushGrant{}}, nil
}

func (b *Builder) appLock(key string) func() { return b.locks.Lock(key) }

// DefaultMaxPush is the largest pack a push may send (100 MiB).
const DefaultMaxPush = 100 << 20

// ErrBuild marks a failure of the app's own build (its code, its hooks), as
// opposed to a platform failure.
var ErrBuild = errors.New("build failed")

// Deploy builds commit of the app and rolls it out. gitEnv carries the
// variables a pre-receive hook sees (the quarantine object directory), so
// that a commit not yet accepted can be read.
func (b *Builder) Deploy(ctx context.Context, appKey, commit string, gitEnv []string, out io.Writer) (err error) {
	unlock := b.appLock(appKey)
	defer unlock()
	var app store.App
	if err := b.o.Store.View(func(tx *store.Tx) error { return tx.Get(appKey, &app) }); err != nil {
		return fmt.Errorf("the app no longer exists: %w", err)
	}
	started := time.Now()
	depID := newDeploymentID()
	dir := b.o.Layout.Deployment(app.ID, depID)
	fmt.Fprintf(out, "-----> Deploying %s (commit %s) as deployment %s\n", app.FullName(), short(commit), depID)
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := b.checkout(ctx, app.ID, commit, gitEnv, dir); err != nil {
		return fmt.Errorf("checking out %s: %w", short(commit), err)
	}
	plan, err := Detect(dir, app.Type, b.o.StaticServer)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	fmt.Fprintf(out, "-----> %s app detected\n", plan.Type)
	if plan.Type == Dockerfile {
		return b.deployDockerfile(ctx, &app, depID, commit, dir, started, out)
	}
	if len(plan.Processes) > 0 {
		names := make([]string, 0, len(plan.Processes))
		for n := range plan.Processes {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(out, "-----> Process types: web, %s (gantry ps scale %s %s=N)\n", strings.Join(names, ", "), app.Name, names[0])
	}
	for _, n := range plan.Notes {
		fmt.Fprintf(out, "       note: %s\n", n)
	}
	hooks, err := FindHooks(dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	for _, w := range hooks.Warnings {
		fmt.Fprintf(out, "       warning: %s\n", w)
	}
	jobs, cronWarnings, err := FindCron(dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	for _, w := range cronWarnings {
		fmt.Fprintf(out, "       warning: %s\n", w)
	}
	if len(jobs) > 0 {
		fmt.Fprintf(out, "-----> Cron: %d job(s) (gantry cron list %s)\n", len(jobs), app.Name)
		for _, j := range jobs {
			fmt.Fprintf(out, "       %-14s %s\n", j.Schedule, j.Command)
		}
	}
	env := b.o.Env(&app, dir, plan.Type)
	var rt runtimes.Runtime
	if plan.Want != nil && b.o.Runtimes != nil {
		rts := b.o.Runtimes()
		rt, err = runtimes.Pick(*plan.Want, rts)
		if err != nil && plan.Want.Lang == runtimes.Go && b.o.FetchGo != nil && plan.Want.Constraint != "" {
			// The Go go.mod names, fetched once into the runtimes
			// directory for every app that asks for it.
			fmt.Fprintf(out, "-----> Fetching Go %s (%s) through the module proxy into the runtimes directory\n", plan.Want.Constraint, plan.Want.From)
			fetched := time.Now()
			if tree, ferr := b.o.FetchGo(ctx, plan.Want.Constraint); ferr != nil {
				fmt.Fprintf(out, "       note: %v\n", ferr)
			} else {
				fmt.Fprintf(out, "       %s in %s\n", filepath.Base(tree), time.Since(fetched).Round(time.Millisecond))
				rts = b.o.Runtimes()
				rt, err = runtimes.Pick(*plan.Want, rts)
			}
		}
		if err != nil && plan.Want.Lang == runtimes.Go {
			// go itself fetches the toolchain go.mod names (GOTOOLCHAIN,
			// through the module proxy), into the app's build cache.
			if rt, err = runtimes.Pick(runtimes.Want{Lang: runtimes.Go}, rts); err == nil {
				fmt.Fprintf(out, "       note: no Go here satisfies %s; go fetches that toolchain itself (GOTOOLCHAIN)\n", plan.Want.From)
			}
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBuild, err)
		}
		why := plan.Want.From
		if why == "" {
			why = "no version asked for"
		}
		fmt.Fprintf(out, "-----> %s %s (%s; %s)\n", langName[rt.Lang], rt.Version, why, rt.Source)
		env = WithRuntime(env, rt.Bin, rt.Root)
	}
	run := func(title string, args ...string) error {
		fmt.Fprintf(out, "-----> %s\n", title)
		if err := b.o.Run(ctx, appKey, dir, env, indent(out), b.o.StepTimeout, args...); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBuild, title, err)
		}
		return nil
	}
	hook := func(name string) error {
		if p := hooks.Paths[name]; p != "" {
			return run(fmt.Sprintf("Running %s hook (%s/%s)", name, hooks.Dir, name), p)
		}
		return nil
	}
	if err := hook("pre_build"); err != nil {
		return err
	}
	for _, s := range plan.Steps {
		if err := run("Building: "+s.Title, s.Args...); err != nil {
			return err
		}
	}
	if err := hook("build"); err != nil {
		return err
	}
	dep := store.Deployment{ID: depID, AppID: app.ID, Commit: commit, Type: plan.Type,
		Command: plan.Start, Processes: plan.Processes, Cron: jobs, Health: HealthPath(dir), Dir: dir, Node: b.o.Node, Created: time.Now().UTC(),
		RuntimeBin: rt.Bin, RuntimeRoot: rt.Root}
	if b.o.Artifacts != nil {
		packed := time.Now()
		d, err := b.o.Artifacts.Put(dir)
		if err != nil {
			return fmt.Errorf("storing the build for the other machines: %w", err)
		}
		dep.Artifact = d
		fmt.Fprintf(out, "-----> Stored the build as %s for the other machines (%s)\n", d[:19], time.Since(packed).Round(time.Millisecond))
	}
	if rt.Version != "" {
		dep.Runtime = langName[rt.Lang] + " " + rt.Version
	}
	if err := b.o.Store.Update(func(tx *store.Tx) error { return tx.Create(store.DeploymentKey(app.ID, depID), &dep) }); err != nil {
		return fmt.Errorf("recording deployment: %w", err)
	}
	// The deploy hook, then the Procfile's release command, run once in a
	// one-off gear of the new deployment: its code, the current env, its
	// cartridges reachable (migrations), before any gear switches. A
	// failure leaves the app as it was.
	var releases []struct{ what, command string }
	if p := hooks.Paths["deploy"]; p != "" {
		releases = append(releases, struct{ what, command string }{fmt.Sprintf("deploy hook (%s/deploy)", hooks.Dir), "exec " + shellQuote(p)})
	}
	if plan.Release != "" {
		releases = append(releases, struct{ what, command string }{"release command: " + plan.Release, plan.Release})
	}
	for _, r := range releases {
		fmt.Fprintf(out, "-----> Running the %s\n", r.what)
		code, err := b.o.Deployer.Release(ctx, appKey, depID, r.command, indent(out))
		if err == nil && code != 0 {
			err = fmt.Errorf("it exited with status %d", code)
		}
		if err != nil {
			b.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.DeploymentKey(app.ID, depID)) })
			what, _, _ := strings.Cut(r.what, ":")
			return fmt.Errorf("%w: the %s failed (%v); the app runs on as it was", ErrBuild, what, err)
		}
	}
	built := time.Now()
	fmt.Fprintf(out, "-----> Build finished in %s; starting gears\n", built.Sub(started).Round(time.Millisecond))
	if err := b.o.Deployer.Rollout(ctx, appKey, depID, out); err != nil {
		b.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.DeploymentKey(app.ID, depID)) })
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	fmt.Fprintf(out, "-----> Released in %s\n", time.Since(built).Round(time.Millisecond))
	if err := hook("post_deploy"); err != nil {
		// The new deployment is live; a failing post_deploy is reported, not undone.
		fmt.Fprintf(out, "       warning: %v\n", err)
	}
	b.prune(&app)
	fmt.Fprintf(out, "-----> %s deployed to %s\n", app.FullName(), b.o.URL(&app))
	return nil
}

// checkout extracts commit's tree into dir with `git archive`, keeping file
// modes (hooks must stay executable).
func (b *Builder) checkout(ctx context.Context, appID, commit string, gitEnv []string, dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "git", "archive", "--format=tar", commit)
	cmd.Dir = b.o.Layout.Repo(appID)
	cmd.Env = append(os.Environ(), gitEnv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	xerr := untar(stdout, dir)
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return xerr
}

func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			root.MkdirAll(filepath.Dir(name), 0o755)
			f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			root.MkdirAll(filepath.Dir(name), 0o755)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		}
	}
}

// prune removes deployments beyond the app's keep count, never the active one.
func (b *Builder) prune(app *store.App) {
	keep := app.KeepDeployments
	if keep <= 0 {
		keep = 3
	}
	var cur store.App
	var deps []store.Deployment
	b.o.Store.View(func(tx *store.Tx) error {
		tx.Get(app.Key(), &cur)
		var err error
		deps, err = store.ListDeployments(tx, app.ID)
		return err
	})
	sort.Slice(deps, func(i, j int) bool { return deps[i].Created.After(deps[j].Created) })
	for i, d := range deps {
		if i < keep || d.ID == cur.ActiveDeployment {
			continue
		}
		b.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.DeploymentKey(app.ID, d.ID)) })
		os.RemoveAll(d.Dir)
	}
	if b.o.Artifacts != nil {
		b.keepArtifacts()
	}
}

// keepArtifacts removes the stored builds no deployment names.
func (b *Builder) keepArtifacts() {
	keep := map[string]bool{}
	err := b.o.Store.View(func(tx *store.Tx) error {
		apps, err := store.ListApps(tx)
		if err != nil {
			return err
		}
		for _, a := range apps {
			deps, err := store.ListDeployments(tx, a.ID)
			if err != nil {
				return err
			}
			for _, d := range deps {
				keep[d.Artifact] = true
			}
		}
		return nil
	})
	if err == nil { // never on a partial view
		b.o.Artifacts.Keep(keep)
	}
}

func newDeploymentID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func short(commit string) string {
	if len(commit) > 10 {
		return commit[:10]
	}
	return commit
}

// indent prefixes every line of build output, as Heroku does.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (i *indenter) Write(p []byte) (int, error) {
	var buf []byte
	for _, c := range p {
		if i.bol {
			buf = append(buf, "       "...)
			i.bol = false
		}
		buf = append(buf, c)
		if c == '\n' {
			i.bol = true
		}
	}
	_, err := i.w.Write(buf)
	return len(p), err
}

// CleanStale removes deployment directories that no deployment record
// names and that were made before `before` (the server's start): a server
// killed in the middle of a push leaves them behind. Directories of builds
// running now are younger and stay.
func (b *Builder) CleanStale(before time.Time) {
	var apps []store.App
	var deps []store.Deployment
	b.o.Store.View(func(tx *store.Tx) error {
		var err error
		if apps, err = store.ListApps(tx); err != nil {
			return err
		}
		deps, err = store.ListAllDeployments(tx)
		return err
	})
	known := map[string]bool{}
	for _, d := range deps {
		known[d.Dir] = true
	}
	for _, app := range apps {
		dir := b.o.Layout.Deployments(app.ID)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			fi, err := e.Info()
			if err != nil || known[path] || !fi.ModTime().Before(before) {
				continue
			}
			if err := os.RemoveAll(path); err == nil {
				b.log.Info("removed a deployment directory left by an interrupted push", "app", app.FullName(), "dir", path)
			}
		}
	}
}

var langName = map[string]string{runtimes.Node: "Node.js", runtimes.Python: "Python", runtimes.Go: "Go"}

// WithRuntime puts a runtime's binaries first on env's PATH and names its
// tree (GANTRY_RUNTIME_ROOT, which the sandbox mounts read-only).
func WithRuntime(env []string, bin, root string) []string {
	if bin == "" {
		return env
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			kv = "PATH=" + bin + ":" + p
		}
		if !strings.HasPrefix(kv, "GANTRY_RUNTIME_ROOT=") {
			out = append(out, kv)
		}
	}
	if root != "" {
		out = append(out, "GANTRY_RUNTIME_ROOT="+root)
	}
	return out
}
