package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/artifact"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// These tests drive the gear lifecycle (rollout, drain, crash restart,
// re-attach) against a recording runtime: no process starts, but a started
// gear listens on its port, so readiness is checked for real.

// fakeRouter applies every revision at once and reports the connections a
// test sets.
type fakeRouter struct {
	mu    sync.Mutex
	conns map[string]int
}

func (r *fakeRouter) WaitApplied(context.Context, int64) error { return nil }
func (r *fakeRouter) ActiveConns(ep string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[ep]
}
func (r *fakeRouter) set(ep string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns[ep] = n
}

type lifecycle struct {
	t   *testing.T
	st  *store.Store
	rec *gearrt.Recorder
	rt  *fakeRouter
	a   *Agent
	app store.App
}

func newLifecycle(t *testing.T) *lifecycle {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	return newLifecycleOn(t, st)
}

// twiceBackend runs every write transaction once on a scratch copy that it
// throws away, then for real: what etcd does when another machine's write
// came first. A change whose function keeps state across runs shows.
type twiceBackend struct{ *store.Mem }

func (b twiceBackend) Update(fn func(store.KV) error) (int64, error) {
	scratch := store.NewMem()
	b.Mem.View(func(kv store.KV) error {
		return kv.Scan("", func(k string, v []byte) error {
			_, err := scratch.Update(func(s store.KV) error { return s.Put(k, v) })
			return err
		})
	})
	scratch.Update(fn)
	return b.Mem.Update(fn)
}

func newLifecycleOn(t *testing.T, st *store.Store) *lifecycle {
	t.Helper()
	dir := t.TempDir()
	var err error
	t.Cleanup(func() { st.Close() })
	l := &lifecycle{t: t, st: st, rec: &gearrt.Recorder{}, rt: &fakeRouter{conns: map[string]int{}}}
	l.rec.OnStart = l.listen
	l.a, err = New(Options{Store: st, Layout: layout.Layout{Root: dir}, Exe: "/nonexistent/gantry", Router: l.rt, Runtime: l.rec,
		Env:          func(*store.App, *store.Deployment, *store.Gear) []string { return nil },
		RunHost:      func(context.Context, string, []string, io.Writer, time.Duration, ...string) error { return nil },
		StartTimeout: 5 * time.Second, DrainTimeout: time.Minute, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	l.app = store.App{ID: "a1", Name: "blog", Domain: "acme", Host: "blog-acme.localhost", Scale: 2}
	l.put(l.app.Key(), &l.app)
	l.deployment("d1")
	return l
}

// listen makes a started gear accept connections on its port.
func (l *lifecycle) listen(gearID string) error {
	var g store.Gear
	if err := l.st.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", g.Endpoint())
	if err != nil {
		return err
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return nil
}

func (l *lifecycle) put(key string, v any) {
	l.t.Helper()
	if err := l.st.Update(func(tx *store.Tx) error { return tx.Put(key, v) }); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lifecycle) deployment(id string) {
	l.put(store.DeploymentKey(l.app.ID, id), &store.Deployment{ID: id, AppID: l.app.ID, Command: "serve", Dir: l.t.TempDir()})
}

// gears lists the app's gears as "deployment state" lines with their IDs.
func (l *lifecycle) gears() (map[string][]string, []store.Gear) {
	l.t.Helper()
	gs, err := l.a.gears(l.app.ID)
	if err != nil {
		l.t.Fatal(err)
	}
	by := map[string][]string{}
	for _, g := range gs {
		k := g.Deployment + " " + g.State
		by[k] = append(by[k], g.ID)
	}
	for _, ids := range by {
		sort.Strings(ids)
	}
	return by, gs
}

// calls are the recorder's calls, sorted (gears start and stop in
// parallel), with gear IDs replaced by names.
func (l *lifecycle) calls(names map[string]string) string {
	lines := strings.Split(l.rec.Calls(), "\n")
	for i, s := range lines {
		for id, n := range names {
			s = strings.ReplaceAll(s, id, n)
		}
		lines[i] = s
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (l *lifecycle) waitFor(what string, cond func() bool) {
	l.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func names(prefix string, ids []string) map[string]string {
	m := map[string]string{}
	for i, id := range ids {
		m[id] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return m
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// A rollout starts the app's scale of gears, routes them in one write, and
// stops the old gears only when the router says they are drained.
func TestRolloutDrainsOldGears(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	by, _ := l.gears()
	first := by["d1 running"]
	if len(first) != 2 || len(by) != 1 {
		t.Fatalf("after the first rollout: %v; want two running gears of d1", by)
	}
	old := names("old", first)
	if got, want := l.calls(old), "prepare old1 serve\nprepare old2 serve\nstart old1\nstart old2"; got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}

	// One old gear still has a connection open.
	_, gs := l.gears()
	busy := gs[0]
	l.rt.set(busy.Endpoint(), 1)
	l.deployment("d2")
	if err := l.a.Rollout(ctx, l.app.Key(), "d2", io.Discard); err != nil {
		t.Fatal(err)
	}
	by, _ = l.gears()
	fresh := names("new", by["d2 running"])
	if len(fresh) != 2 || len(by["d1 draining"]) != 2 {
		t.Fatalf("after the second rollout: %v; want d2 running and d1 draining", by)
	}
	// The idle old gear goes; the busy one waits for its connection.
	l.waitFor("the idle old gear is removed", func() bool { by, _ := l.gears(); return len(by["d1 draining"]) == 1 })
	if by, _ := l.gears(); by["d1 draining"][0] != busy.ID {
		t.Fatalf("the busy gear was stopped first: %v", by)
	}
	l.rt.set(busy.Endpoint(), 0)
	l.waitFor("the busy old gear is removed once drained", func() bool { by, _ := l.gears(); return len(by["d1 draining"]) == 0 })
	l.a.wg.Wait()
	if got, want := l.calls(merge(old, fresh)), "prepare new1 serve\nprepare new2 serve\nstart new1\nstart new2\nstop old1\nstop old2"; got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	var app store.App
	l.st.View(func(tx *store.Tx) error { return tx.Get(l.app.Key(), &app) })
	if app.ActiveDeployment != "d2" {
		t.Errorf("active deployment %q; want d2", app.ActiveDeployment)
	}
}

// On a store whose transactions run again (etcd), a rollout records
// exactly its gears, starts only gears that exist, and the old ones go.
func TestChangesSurviveRetriedTransactions(t *testing.T) {
	st, err := store.New(twiceBackend{store.NewMem()}, filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	l := newLifecycleOn(t, st)
	ctx := context.Background()
	for _, dep := range []string{"d1", "d2"} {
		l.deployment(dep)
		if err := l.a.Rollout(ctx, l.app.Key(), dep, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	l.waitFor("the old gears are removed", func() bool { by, _ := l.gears(); return len(by) == 1 })
	by, _ := l.gears()
	if len(by["d2 running"]) != 2 {
		t.Errorf("after two rollouts: %v; want two running gears of d2", by)
	}
	if err := l.a.ScaleTo(ctx, l.app.Key(), 3, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := l.a.Stop(ctx, l.app.Key()); err != nil {
		t.Fatal(err)
	}
	l.a.wg.Wait()
	calls := l.rec.Calls()
	starts, stops := strings.Count(calls, "start "), strings.Count(calls, "stop ")
	if starts != 5 || stops != 5 {
		t.Errorf("%d starts and %d stops; want 5 of each (2+2 rolled out, 1 scaled up, all stopped):\n%s", starts, stops, calls)
	}
}

// A gear that never listens fails the rollout: its gears are stopped and
// removed, and the gears that served before are untouched.
func TestRolloutFailureKeepsOldGears(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	by, _ := l.gears()
	old := names("old", by["d1 running"])
	l.rec.Calls()
	l.rec.OnStart = func(string) error { return nil } // starts, never listens
	l.a.o.StartTimeout = 200 * time.Millisecond
	l.deployment("d2")
	err := l.a.Rollout(ctx, l.app.Key(), "d2", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "did not listen") {
		t.Fatalf("rollout of a gear that never listens: %v", err)
	}
	by, _ = l.gears()
	if len(by) != 1 || len(by["d1 running"]) != 2 {
		t.Errorf("after the failed rollout: %v; want only the two d1 gears, running", by)
	}
	if got := l.calls(old); strings.Contains(got, "old") || strings.Count(got, "prepare") != 2 || strings.Count(got, "start") != 2 || strings.Count(got, "stop") != 2 {
		t.Errorf("calls:\n%s\nwant two new gears started and stopped, the old ones untouched", got)
	}
}

// The supervise loop starts a gear's supervisor again when it died (the
// supervisor itself restarts a crashed app); a stopped gear stays down.
func TestSuperviseRestartsDeadSupervisor(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	_, gs := l.gears()
	n := names("g", []string{gs[0].ID, gs[1].ID})
	l.rec.Calls()
	l.rec.Crash(gs[0].ID)
	l.a.supervise(ctx)
	if got, want := l.calls(n), "start g1"; got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	if s := l.a.Status(gs[0].ID); s.Status != "running" {
		t.Errorf("status after the restart: %+v", s)
	}
	l.a.supervise(ctx)
	if got := l.calls(n); got != "" {
		t.Errorf("a second pass with every supervisor alive did: %s", got)
	}
}

// At start the agent adopts live gears untouched, starts gears whose
// supervisor is gone, removes gears left draining or starting by a killed
// server, and brings the app back to its recorded scale.
func TestReattach(t *testing.T) {
	l := newLifecycle(t)
	l.app.ActiveDeployment = "d1"
	l.app.Scale = 3
	l.put(l.app.Key(), &l.app)
	gear := func(id, state string, port int) store.Gear {
		g := store.Gear{ID: id, AppID: l.app.ID, AppKey: l.app.Key(), Deployment: "d1", State: state, IP: "127.0.0.1", Port: port, Isolation: Process}
		l.put(store.GearKey(id), &g)
		return g
	}
	live := gear("live", store.GearRunning, 1)
	l.rec.Adopt(live.ID)
	gear("gone", store.GearRunning, freePort(t))
	gear("draining", store.GearDraining, 3)
	gear("starting", store.GearStarting, 4)
	gear("building", GearBuilding, 5)

	l.a.reattach(context.Background())
	l.waitFor("the app is back to 3 running gears", func() bool { by, _ := l.gears(); return len(by["d1 running"]) == 3 })
	l.a.wg.Wait()
	by, _ := l.gears()
	var added []string
	for _, id := range by["d1 running"] {
		if id != "live" && id != "gone" {
			added = append(added, id)
		}
	}
	if len(by) != 1 || len(added) != 1 {
		t.Fatalf("gears after re-attach: %v; want live, gone and one new gear running", by)
	}
	got := l.calls(names("new", added))
	want := "prepare new1 serve\nstart gone\nstart new1\nstop draining\nstop starting"
	if got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// `gantry ssh` goes through the runtime: the first running web gear, the
// command under sh -c.
func TestExecGoesThroughTheRuntime(t *testing.T) {
	l := newLifecycle(t)
	if err := l.a.Rollout(context.Background(), l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	l.rec.Calls()
	cmd, gear, err := l.a.ExecCommand(l.app.Key(), "", "uptime", false, "")
	if err != nil || cmd == nil {
		t.Fatal(err)
	}
	if got, want := l.calls(map[string]string{gear: "g"}), "exec g tty=false /bin/sh -c uptime"; got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
}

// Port-forwards reach only what a gear of the caller listens on, through
// the gear's runtime.
func TestServicesAndDial(t *testing.T) {
	l := newLifecycle(t)
	l.app.Owner = "alice"
	l.put(l.app.Key(), &l.app)
	if err := l.a.Rollout(context.Background(), l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	_, gs := l.gears()
	g := gs[0]
	l.rec.Listen(g.ID, gearrt.Socket{Port: g.Port}, gearrt.Socket{Port: 5432, Loopback: true})
	svcs, err := l.a.Services(l.app.Key(), g.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range svcs {
		got = append(got, fmt.Sprintf("%s:%d local=%v", s.Name, s.Port, s.Local))
	}
	if want := fmt.Sprintf("postgresql:5432 local=true web:%d local=false", g.Port); strings.Join(got, " ") != want { // by port
		t.Errorf("services %v; want %s", got, want)
	}
	l.rec.Calls()
	conn, svc, err := l.a.DialService("alice", g.Endpoint())
	if err != nil || svc.Name != "web" {
		t.Fatalf("dial the web port: %v %v", svc, err)
	}
	conn.Close()
	if got, want := l.calls(map[string]string{g.ID: "g"}), "dial g "+g.Endpoint(); got != want {
		t.Errorf("calls %q; want %q", got, want)
	}
	if _, _, err := l.a.DialService("bob", g.Endpoint()); err == nil {
		t.Error("bob reached alice's gear")
	}
	if _, _, err := l.a.DialService("alice", fmt.Sprintf("%s:%d", g.IP, 6379)); err == nil {
		t.Error("a port nothing listens on was dialled")
	}
}

// A machine drops its copies of deployments the builder pruned (when no
// gear here runs them, and not a tree that may be a build under way), and
// the packed builds no deployment names.
func TestPruneBuilds(t *testing.T) {
	l := newLifecycle(t)
	cache := &artifact.Cache{Dir: filepath.Join(l.a.o.Layout.Root, "artifacts")}
	l.a.o.Artifacts = cache
	lay := l.a.o.Layout
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	kept, _ := cache.Put(src)
	os.WriteFile(filepath.Join(src, "g"), []byte("y"), 0o644)
	dropped, _ := cache.Put(src)
	l.put(store.DeploymentKey(l.app.ID, "d2"), &store.Deployment{ID: "d2", AppID: l.app.ID, Artifact: kept})
	l.put(store.GearKey("g1"), &store.Gear{ID: "g1", AppID: l.app.ID, AppKey: l.app.Key(), Deployment: "old-running"})
	old := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{"d1", "d2", "gone", "old-running", "building"} {
		p := lay.Deployment(l.app.ID, d)
		os.MkdirAll(p, 0o755)
		if d != "building" {
			os.Chtimes(p, old, old)
		}
	}
	l.a.pruneBuilds()
	for d, want := range map[string]bool{"d1": true, "d2": true, "gone": false, "old-running": true, "building": true} {
		if _, err := os.Stat(lay.Deployment(l.app.ID, d)); (err == nil) != want {
			t.Errorf("deployment %s: kept=%v; want %v", d, err == nil, want)
		}
	}
	if _, ok := cache.Path(kept); !ok {
		t.Error("a named build was removed")
	}
	if _, ok := cache.Path(dropped); ok {
		t.Error("a build no deployment names stayed")
	}
}

// A one-off gear runs the app's code for a command: not routed, left
// alone by a deploy, never picked for a shell, gone when done.
func TestOneOffGear(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	id, done, err := l.a.StartOneOff(ctx, l.app.Key())
	if err != nil {
		t.Fatal(err)
	}
	l.deployment("d2")
	if err := l.a.Rollout(ctx, l.app.Key(), "d2", io.Discard); err != nil {
		t.Fatal(err)
	}
	by, _ := l.gears()
	if fmt.Sprint(by["d1 oneoff"]) != "["+id+"]" || len(by["d2 running"]) != 2 {
		t.Errorf("gears after a deploy during a one-off: %v", by)
	}
	if _, gear, err := l.a.ExecCommand(l.app.Key(), id, "rake db:migrate", false, ""); err != nil || gear != id {
		t.Errorf("exec in the one-off: %s %v", gear, err)
	}
	if _, gear, err := l.a.ExecCommand(l.app.Key(), "", "uptime", false, ""); err != nil || gear == id {
		t.Errorf("a shell went to %s (%v); want a web gear, not the one-off", gear, err)
	}
	done()
	if by, _ := l.gears(); len(by["d1 oneoff"]) != 0 {
		t.Errorf("the one-off stayed: %v", by)
	}
	noApp := store.App{ID: "a2", Name: "empty", Domain: "acme"}
	l.put(noApp.Key(), &noApp)
	if _, _, err := l.a.StartOneOff(ctx, noApp.Key()); err == nil || !strings.Contains(err.Error(), "nothing deployed") {
		t.Errorf("a run of an app with nothing deployed: %v", err)
	}
}

// A release command runs in a one-off gear of the new deployment, before
// it goes live, and leaves nothing behind.
func TestReleaseRunsInAOneOffOfTheNewDeployment(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	l.deployment("d2")
	l.rec.Calls()
	var out strings.Builder
	code, err := l.a.Release(ctx, l.app.Key(), "d2", "rake db:migrate", &out)
	if err != nil || code != 0 {
		t.Fatalf("release: %d %v", code, err)
	}
	calls := l.rec.Calls()
	if !strings.Contains(calls, "start run") || !strings.Contains(calls, "/bin/sh -c rake db:migrate") {
		t.Errorf("calls:\n%s", calls)
	}
	by, gs := l.gears()
	if len(by["d1 running"]) != 2 || len(gs) != 2 {
		t.Errorf("gears after the release: %v", by)
	}
}

// A detached run's gear runs the command itself, once; supervise removes
// it when the command ended.
func TestDetachedRunRunsTheCommandOnce(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	id, err := l.a.RunDetached(ctx, l.app.Key(), "./reindex")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(l.a.o.Layout.Gear(id), shim.SpecFile))
	var spec shim.Spec
	if err != nil || json.Unmarshal(raw, &spec) != nil || spec.Command != "./reindex" || !spec.Once {
		t.Fatalf("the detached gear's spec: %s %v", raw, err)
	}
	l.a.supervise(ctx) // still running: kept
	if by, _ := l.gears(); len(by["d1 oneoff"]) != 1 {
		t.Fatalf("gears while it runs: %v", by)
	}
	l.rec.Crash(id) // the command ended
	l.a.supervise(ctx)
	if by, _ := l.gears(); len(by["d1 oneoff"]) != 0 {
		t.Errorf("gears after it ended: %v", by)
	}
}

// Workers (Procfile types beyond web) start with a rollout (one gear for a
// type new in the deployment), scale on their own, roll with the next
// deployment, stay when web idles, come back when lost, and an unknown
// type changes nothing.
func TestWorkersRollScaleAndRestore(t *testing.T) {
	l := newLifecycle(t)
	ctx := context.Background()
	withWorker := func(id string) {
		l.put(store.DeploymentKey(l.app.ID, id), &store.Deployment{ID: id, AppID: l.app.ID, Command: "serve", Dir: l.t.TempDir(),
			Processes: map[string]string{"worker": "work"}})
	}
	// kinds counts the app's gears by "deployment kind state".
	kinds := func() map[string]int {
		_, gs := l.gears()
		out := map[string]int{}
		for _, g := range gs {
			out[g.Deployment+" "+g.Kind()+" "+g.State]++
		}
		return out
	}
	formation := func() map[string]int {
		var app store.App
		l.st.View(func(tx *store.Tx) error { return tx.Get(l.app.Key(), &app) })
		return app.Formation
	}
	withWorker("d1")
	if err := l.a.Rollout(ctx, l.app.Key(), "d1", io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := kinds(); got["d1 web running"] != 2 || got["d1 worker running"] != 1 || len(got) != 2 {
		t.Fatalf("after the first rollout: %v; want 2 web and 1 worker of d1", got)
	}
	if f := formation(); f["worker"] != 1 {
		t.Fatalf("formation %v; want worker=1 recorded", f)
	}
	if !strings.Contains(l.rec.Calls(), " work\n") && !strings.HasSuffix(l.rec.Calls(), " work") {
		t.Fatalf("no gear prepared with the worker's command:\n%s", l.rec.Calls())
	}

	if err := l.a.ScaleProcess(ctx, l.app.Key(), "worker", 2, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := kinds(); got["d1 worker running"] != 2 {
		t.Fatalf("after worker=2: %v", got)
	}
	if err := l.a.ScaleProcess(ctx, l.app.Key(), "clock", 1, io.Discard); err == nil || !strings.Contains(err.Error(), `no process type "clock"`) {
		t.Fatalf("scaling an unknown type: %v; want a refusal naming it", err)
	}
	if f := formation(); len(f) != 1 || f["worker"] != 2 {
		t.Fatalf("formation after a refused scale: %v; want worker=2 only", f)
	}

	// A new deployment rolls both types; the old workers stop.
	withWorker("d2")
	if err := l.a.Rollout(ctx, l.app.Key(), "d2", io.Discard); err != nil {
		t.Fatal(err)
	}
	l.waitFor("the old gears stop", func() bool { k := kinds(); return k["d1 worker draining"]+k["d1 web draining"] == 0 })
	if got := kinds(); got["d2 web running"] != 2 || got["d2 worker running"] != 2 || len(got) != 2 {
		t.Fatalf("after the second rollout: %v; want 2 web and 2 workers of d2", got)
	}

	// Idling stops web only.
	if err := l.a.ScaleTo(ctx, l.app.Key(), 0, io.Discard); err != nil {
		t.Fatal(err)
	}
	l.waitFor("web gears stop", func() bool { return kinds()["d2 web draining"] == 0 })
	if got := kinds(); got["d2 worker running"] != 2 || got["d2 web running"] != 0 {
		t.Fatalf("idle: %v; want the 2 workers still running", got)
	}

	// A lost worker (its record gone with a machine) comes back.
	_, gs := l.gears()
	for _, g := range gs {
		if g.Worker() {
			l.st.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
			break
		}
	}
	l.a.restoreCounts(ctx)
	l.a.wg.Wait()
	if got := kinds(); got["d2 worker running"] != 2 {
		t.Fatalf("after restoring: %v; want 2 workers again", got)
	}

	// A deployment without the type stops its workers; the count stays
	// recorded for when it comes back.
	l.deployment("d3")
	if err := l.a.Rollout(ctx, l.app.Key(), "d3", io.Discard); err != nil {
		t.Fatal(err)
	}
	l.waitFor("the workers stop", func() bool { return kinds()["d2 worker draining"] == 0 })
	if got := kinds(); got["d3 web running"] != 1 || len(got) != 1 {
		t.Fatalf("after a deployment without workers: %v; want its web gear only", got)
	}
	if f := formation(); f["worker"] != 2 {
		t.Fatalf("formation %v; want worker=2 kept", f)
	}
}

// A gear another machine placed here, on a port something of this host
// holds (that machine cannot see it: this machine's etcd, say), gets a
// port of its own before it starts; else its readiness check would find
// the other program and the router would send it the app's requests.
func TestPlacedGearOnAPortInUse(t *testing.T) {
	l := newLifecycle(t)
	os.MkdirAll(l.a.o.Layout.Deployment(l.app.ID, "d1"), 0o750)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	g := store.Gear{ID: "placed", AppID: l.app.ID, AppKey: l.app.Key(), Deployment: "d1", State: store.GearStarting, IP: "127.0.0.1", Port: port, Isolation: Process, Node: l.a.Node()}
	l.put(store.GearKey(g.ID), &g)
	if err := l.a.StartGear(context.Background(), g.ID, io.Discard); err != nil {
		t.Fatal(err)
	}
	_, gs := l.gears()
	if len(gs) != 1 || gs[0].Port == port || gs[0].Port < 20000 || gs[0].Port > 29999 {
		t.Fatalf("gears %+v; want the placed gear moved off port %d", gs, port)
	}
	if got := l.calls(nil); got != "prepare placed serve\nstart placed" {
		t.Errorf("calls:\n%s", got)
	}
}
