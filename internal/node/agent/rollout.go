package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/image"
	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// ErrStartFailed marks a rollout whose new gears never became ready; the
// gears that were serving before are untouched.
var ErrStartFailed = errors.New("the new gears did not start")

// Rollout makes deployment depID ("": the active one, read under the
// app's lock) the app's running deployment with zero
// downtime: it starts app.Scale new gears, waits until each accepts
// connections (and answers the health path, if any), switches the route to
// them in one store write, then drains and stops the old gears in the
// background. If the new gears fail, they are removed and nothing else
// changes. Progress goes to out.
func (a *Agent) Rollout(ctx context.Context, appKey, depID string, out io.Writer) error {
	unlock := a.appLock(appKey)
	defer unlock()
	var app store.App
	var dep store.Deployment
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if depID == "" { // the active one, as it is now
			depID = app.ActiveDeployment
		}
		return tx.Get(store.DeploymentKey(app.ID, depID), &dep)
	})
	if err != nil {
		return fmt.Errorf("loading app and deployment: %w", err)
	}
	_, failWeb, err := a.startGears(ctx, &app, &dep, "", max(app.Scale, 1), out)
	if err != nil {
		return err
	}
	// The other process types roll with web: their new gears start
	// before the switch, and the old ones stop after it.
	formation := store.Formation(&app, &dep)
	fails := []func(error) error{failWeb}
	fail := func(err error) error {
		for _, f := range fails {
			err = f(err)
		}
		return err
	}
	for _, proc := range slices.Sorted(maps.Keys(formation)) {
		if formation[proc] == 0 {
			continue
		}
		_, f, err := a.startGears(ctx, &app, &dep, proc, formation[proc], out)
		if err != nil {
			return fail(err)
		}
		fails = append(fails, f)
	}

	// Switch: new gears routed, old ones draining, in one write.
	var old []store.Gear
	err = a.o.Store.Update(func(tx *store.Tx) error {
		old = nil // a transaction may run again (etcd)
		var cur store.App
		if err := tx.Get(appKey, &cur); err != nil {
			return err
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if g.AppID != app.ID || g.Service != "" {
				continue
			}
			switch {
			case g.Deployment == dep.ID && g.State == store.GearStarting:
				g.State = store.GearRunning
			case g.State == store.GearRunning || g.State == store.GearStarting:
				g.State = store.GearDraining
				old = append(old, g)
			case g.State == store.GearStandby: // made for a wake of what ran
				old = append(old, g) // (its app never ran: no stop hooks)
				g.State = store.GearDraining
			default:
				continue
			}
			if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
				return err
			}
		}
		cur.ActiveDeployment = dep.ID
		cur.Stopped = false
		for proc, n := range formation {
			if _, ok := cur.Formation[proc]; !ok {
				if cur.Formation == nil {
					cur.Formation = map[string]int{}
				}
				cur.Formation[proc] = n // a type new in this deployment
			}
		}
		if cur.Idle || cur.Scale == 0 {
			// A deploy wakes an idle app and leaves it awake.
			cur.Idle, cur.Scale = false, max(cur.MinGears, 1)
		}
		return tx.Put(appKey, &cur)
	})
	if err != nil {
		return fail(fmt.Errorf("switching route: %w", err))
	}
	if a.o.Router != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.o.Router.WaitApplied(wctx, a.o.Store.Rev())
		cancel()
	}
	a.drainAndStop(old)
	if app.Autoscaled() {
		a.standBy(ctx, &app, &dep) // for the next scale-up
	}
	return nil
}

// startGears reserves, starts and health-checks n new gears of dep's
// process type proc ("": web), on the machines placement picks. They are
// left in state starting (not routed); fail removes them.
func (a *Agent) startGears(ctx context.Context, app *store.App, dep *store.Deployment, proc string, n int, out io.Writer) ([]store.Gear, func(error) error, error) {
	if proc != "" && dep.Processes[proc] == "" {
		return nil, nil, fmt.Errorf("the deployment has no %s process: its Procfile has %s", proc, procList(dep))
	}
	// Standby gears first (an idle app's wake): their containers are made.
	ready := a.standbys(app, dep, proc, n)
	// Record the new gears first: their ports are then reserved.
	var fresh []store.Gear
	woken := map[string]bool{}
	err := a.o.Store.Update(func(tx *store.Tx) error {
		fresh = nil // a transaction may run again (etcd)
		clear(woken)
		for _, id := range ready {
			var g store.Gear
			if tx.Get(store.GearKey(id), &g) != nil || g.State != store.GearStandby {
				continue
			}
			g.State = store.GearStarting
			if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
				return err
			}
			fresh, woken[g.ID] = append(fresh, g), true
		}
		taken := map[int]bool{}
		takenIP := map[netip.Addr]bool{}
		if a.rt.Caps().Isolated {
			if err := a.ensureUID(tx, app); err != nil {
				return err
			}
		}
		nodes, err := a.place(tx, app, n-len(fresh))
		if err != nil {
			return err
		}
		for i := range nodes {
			g := store.Gear{ID: newID(), AppID: app.ID, AppKey: app.Key(), Deployment: dep.ID, Process: proc,
				State: store.GearStarting, Isolation: a.o.Isolation, Node: nodes[i], Created: time.Now().UTC()}
			switch {
			case a.rt.Caps().Isolated:
				ip, err := a.allocIP(tx, takenIP, g.Node)
				if err != nil {
					return err
				}
				g.IP, g.Port = ip, GearPort
				if dep.Image != nil && dep.Image.Port > 0 {
					g.Port = dep.Image.Port // EXPOSE decides; $PORT says it too
				}
			case a.remote(g):
				if g.IP, err = a.nodeAddress(tx, g.Node); err != nil {
					return err
				}
				if g.Port, err = a.allocPort(tx, taken, false); err != nil {
					return err
				}
			default:
				port, err := a.allocPort(tx, taken, true)
				if err != nil {
					return err
				}
				g.IP, g.Port = a.o.IP, port
			}
			if err := tx.Create(store.GearKey(g.ID), &g); err != nil {
				return err
			}
			fresh = append(fresh, g)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reserving gears: %w", err)
	}
	fail := func(err error) error {
		for _, g := range fresh {
			a.stopGear(context.WithoutCancel(ctx), g, io.Discard)
		}
		a.o.Store.Update(func(tx *store.Tx) error {
			for _, g := range fresh {
				tx.Delete(store.GearKey(g.ID))
			}
			return nil
		})
		a.netRemove(gearIDs(fresh)...)
		return err
	}

	// The other machines start theirs meanwhile.
	remoteDone := make(chan error, 1)
	go func() { remoteDone <- a.startRemote(ctx, fresh, out) }()
	waitRemote := func(err error) error {
		if rerr := <-remoteDone; err == nil {
			err = rerr
		}
		return err
	}
	for i := range fresh {
		g := &fresh[i]
		if a.remote(*g) {
			continue
		}
		var err error
		if woken[g.ID] {
			err = a.wake(g)
		} else {
			err = a.startOne(ctx, app, dep, g, out)
		}
		if err != nil {
			return nil, nil, fail(waitRemote(err))
		}
	}
	for i := range fresh {
		g := &fresh[i]
		if a.remote(*g) {
			continue
		}
		if err := a.readyOne(ctx, app, dep, g, out); err != nil {
			return nil, nil, fail(waitRemote(err))
		}
	}
	if err := waitRemote(nil); err != nil {
		return nil, nil, fail(err)
	}
	// A machine may have given its gear another port (ensurePort).
	if !slices.ContainsFunc(fresh, a.remote) {
		return fresh, fail, nil
	}
	err = a.o.Store.View(func(tx *store.Tx) error {
		for i := range fresh {
			if a.remote(fresh[i]) {
				if err := tx.Get(store.GearKey(fresh[i].ID), &fresh[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fail(err)
	}
	return fresh, fail, nil
}

// startOne prepares and starts one gear of this machine (not waiting
// until it serves).
func (a *Agent) startOne(ctx context.Context, app *store.App, dep *store.Deployment, g *store.Gear, out io.Writer) error {
	env := a.o.Env(app, dep, g)
	command := dep.Command
	if g.Worker() {
		if command = dep.Processes[g.Process]; command == "" {
			return fmt.Errorf("the deployment has no %s process: its Procfile has %s", g.Process, procList(dep))
		}
	}
	dir := dep.Dir
	if dep.Image != nil {
		env = imageEnv(dep.Image.Env, env)
		command, dir = strings.Join(dep.Image.Args(), " "), dep.Image.WorkDir
		if dir == "" {
			dir = "/"
		}
	}
	spec := shim.Spec{GearID: g.ID, Command: command, Dir: dir, Env: env, Once: g.State == store.GearOneOff && command != oneOffCommand,
		LogFile: a.logFile(g), LogMax: 10 << 20, StopGrace: app.Grace()}
	sb, err := a.sandboxOf(app, g.ID, command, dir, env)
	switch {
	case err != nil:
	case dep.Image != nil:
		// Its own filesystem, owned by the app's user since it was
		// unpacked: neither the tree nor Gantry itself is mounted.
		// Only its data, tmp and home directories are bound in.
		private := []string{a.o.Layout.Data(app.ID), a.o.Layout.Tmp(app.ID), a.o.Layout.Home(app.ID)}
		sb.Mounts = slices.DeleteFunc(sb.Mounts, func(m sandbox.Mount) bool { return !slices.Contains(private, m.Path) })
		sb.Image = &gearrt.ImageRun{Rootfs: image.Rootfs(dep.Dir), Args: dep.Image.Args(), UID: dep.Image.User}
		err = a.driverFor(*g).Prepare(sb, &spec)
	default:
		sb.Tree = dep.Dir
		sb.Traverse = append(sb.Traverse, filepath.Dir(dep.Dir))
		err = a.driverFor(*g).Prepare(sb, &spec)
	}
	if err != nil {
		return fmt.Errorf("preparing gear %s: %w", g.ID, err)
	}
	// The egress policy is in place before the app runs (and the app's
	// other gears learn the new peer).
	egress := func() error {
		if a.o.Egress != nil && g.Isolation == Namespaces {
			return a.o.Egress.Apply(app.Key())
		}
		return nil
	}
	hook := a.hook(dep, "pre_start")
	if g.State == store.GearOneOff {
		hook = ""
	}
	// A gear whose app waits for its network is launched first: runc makes
	// its container while the policy is applied, and the address (the
	// app's start) comes after the policy.
	if gate, ok := a.driverFor(*g).(gearrt.Gate); ok && gate.Gated(g.ID) && hook == "" {
		if err := a.writeShimSpec(g.ID, spec); err != nil {
			return err
		}
		if err := gate.Launch(g.ID); err != nil {
			return fmt.Errorf("starting gear %s: %w", g.ID, err)
		}
		if err := egress(); err != nil {
			return err
		}
		if g.State == store.GearStandby {
			// Its link and rules now, its address (the app's start)
			// when it wakes.
			if err := a.netAdd(g.ID); err != nil {
				return fmt.Errorf("gear %s's network: %w", g.ID, err)
			}
			return nil
		}
		if err := gate.Connect(g.ID); err != nil {
			return fmt.Errorf("gear %s's network: %w", g.ID, err)
		}
		return nil
	}
	if g.State == store.GearStandby {
		return fmt.Errorf("gear %s cannot stand by: its driver does not wait for its network", g.ID)
	}
	if err := egress(); err != nil {
		return err
	}
	if hook != "" {
		// The hook runs in the gear's network: whole before it (else
		// the start finishes it while the container is made).
		if err := a.driverFor(*g).AddNetwork(g.ID); err != nil {
			return fmt.Errorf("gear %s's network: %w", g.ID, err)
		}
		fmt.Fprintf(out, "-----> Running pre_start hook (gear %s)\n", g.ID)
		if err := a.runGearHook(ctx, app, g, hook, dep.Dir, env, out); err != nil {
			return fmt.Errorf("pre_start hook: %w", err)
		}
	}
	if err := a.writeShimSpec(g.ID, spec); err != nil {
		return err
	}
	if err := a.rt.Start(g.ID); err != nil {
		return fmt.Errorf("starting gear %s: %w", g.ID, err)
	}
	return nil
}

// readyOne waits until a started gear of this machine serves, then runs
// its post_start hook.
func (a *Agent) readyOne(ctx context.Context, app *store.App, dep *store.Deployment, g *store.Gear, out io.Writer) error {
	if g.Worker() {
		if err := a.waitStarted(ctx, g); err != nil {
			tail := a.logTail(g, 20)
			return fmt.Errorf("%w: %s gear %s: %v\n%s", ErrStartFailed, g.Process, g.ID, err, tail)
		}
		fmt.Fprintf(out, "-----> %s gear %s is up%s\n", g.Process, g.ID, a.where(g))
		return nil
	}
	if err := a.waitReady(ctx, g, dep.Health); err != nil {
		tail := a.logTail(g, 20)
		return fmt.Errorf("%w: gear %s: %v\n%s", ErrStartFailed, g.ID, err, tail)
	}
	fmt.Fprintf(out, "-----> Gear %s is up on %s%s\n", g.ID, g.Endpoint(), a.where(g))
	if hook := a.hook(dep, "post_start"); hook != "" {
		fmt.Fprintf(out, "-----> Running post_start hook (gear %s)\n", g.ID)
		if err := a.runGearHook(ctx, app, g, hook, dep.Dir, a.o.Env(app, dep, g), out); err != nil {
			return fmt.Errorf("post_start hook: %w", err)
		}
	}
	return nil
}

// where names the gear's machine in a cluster.
func (a *Agent) where(g *store.Gear) string {
	if a.o.Place == nil {
		return ""
	}
	return " (" + g.Node + ")"
}

// WorkerSettle is how long a worker's process must stay up after its
// start before a deploy counts it as started: a worker that dies at once
// (a syntax error) refuses the deployment.
const WorkerSettle = 500 * time.Millisecond

// waitStarted waits until a worker gear's process runs and has stayed up
// for WorkerSettle since the gear was made.
func (a *Agent) waitStarted(ctx context.Context, g *store.Gear) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.StartTimeout)
	defer cancel()
	for {
		st, err := a.rt.State(g.ID)
		switch {
		case err == nil && st.Restarts > 0:
			return fmt.Errorf("the process %s just after it started", st.LastExit)
		case err == nil && st.Alive && st.PID > 0 && time.Since(g.Created) >= WorkerSettle:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the process did not start within %s", a.o.StartTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// procList names a deployment's process types for messages.
func procList(dep *store.Deployment) string {
	names := []string{"web"}
	names = append(names, slices.Sorted(maps.Keys(dep.Processes))...)
	return strings.Join(names, ", ")
}

// drainAndStop waits, in the background, until the router has no open
// connections to old gears (or the drain timeout), then stops them.
func (a *Agent) drainAndStop(old []store.Gear) {
	if len(old) == 0 {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx := context.Background()
		deadline := time.Now().Add(a.o.DrainTimeout)
		var wg sync.WaitGroup
		for _, g := range old {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for a.o.Router != nil && a.o.Router.ActiveConns(g.Endpoint()) > 0 && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				a.stopGear(ctx, g, io.Discard)
				a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
			}()
		}
		wg.Wait()
		a.netRemove(gearIDs(old)...)
		if len(old) > 0 {
			live := map[string]bool{}
			gears, _ := a.gears(old[0].AppID)
			for _, g := range gears {
				live[g.ID] = true
			}
			cleanLogs(a.o.Layout.Logs(old[0].AppID), 10, live)
		}
	}()
}

// Stop stops all of an app's gears: unrouted first, then stopped.
func (a *Agent) Stop(ctx context.Context, appKey string) error {
	unlock := a.appLock(appKey)
	defer unlock()
	return a.stopAll(ctx, appKey, false)
}

// Delete stops an app's gears and removes the app's gear records; the
// caller removes the app itself.
func (a *Agent) Delete(ctx context.Context, appKey string) error {
	unlock := a.appLock(appKey)
	defer unlock()
	return a.stopAll(ctx, appKey, true)
}

func (a *Agent) stopAll(ctx context.Context, appKey string, deleting bool) error {
	var gears []store.Gear
	err := a.o.Store.Update(func(tx *store.Tx) error {
		gears = nil // a transaction may run again (etcd)
		var app store.App
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		all, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range all {
			if g.AppKey == appKey && (deleting || g.Service == "") {
				was := g.State
				g.State = store.GearStopped
				tx.Put(store.GearKey(g.ID), &g)
				if was == store.GearStandby {
					g.State = was // its app never ran: no stop hooks
				}
				gears = append(gears, g)
			}
		}
		if !deleting {
			app.Stopped = true
			return tx.Put(appKey, &app)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if a.o.Router != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.o.Router.WaitApplied(wctx, a.o.Store.Rev())
		cancel()
	}
	for _, g := range gears {
		a.stopGear(ctx, g, io.Discard)
	}
	err = a.o.Store.Update(func(tx *store.Tx) error {
		for _, g := range gears {
			if err := tx.Delete(store.GearKey(g.ID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return a.netRemove(gearIDs(gears)...)
}

func (a *Agent) hook(dep *store.Deployment, name string) string {
	if a.o.Hook == nil || dep.Image != nil { // an image has its own entrypoint
		return ""
	}
	return a.o.Hook(dep, name)
}

func (a *Agent) writeShimSpec(gearID string, spec shim.Spec) error {
	dir := a.o.Layout.Gear(gearID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(spec, "", "  ")
	return os.WriteFile(filepath.Join(dir, shim.SpecFile), data, 0o640)
}

// waitReady waits until the gear accepts TCP connections and, with a health
// path, answers it with a status below 500. It gives up early when the
// process exits.
func (a *Agent) waitReady(ctx context.Context, g *store.Gear, health string) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.StartTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	// Every millisecond at first (a refused connect costs microseconds;
	// a start is often a few tens of milliseconds), then less often.
	for try, delay := 0, time.Millisecond; ; try++ {
		if try > 100 {
			delay = min(delay*2, 20*time.Millisecond)
		}
		if st, err := a.rt.State(g.ID); err == nil && st.Restarts > 0 {
			return fmt.Errorf("the gear's process %s before it listened on port %d", st.LastExit, g.Port)
		}
		// A connect to a new gear's address can lose its first SYN (seen
		// right after the address is given, when the container and the
		// app start): TCP would retry after a second; the loop retries
		// sooner.
		dial := time.Second
		if try < 100 {
			dial = 50 * time.Millisecond
		}
		c, err := net.DialTimeout("tcp", g.Endpoint(), dial)
		if err == nil {
			c.Close()
			if health == "" {
				return nil
			}
			resp, err := client.Get("http://" + g.Endpoint() + health)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 500 {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if health != "" {
				return fmt.Errorf("the app did not answer its health path %s on $PORT (%d) within %s", health, g.Port, a.o.StartTimeout)
			}
			return fmt.Errorf("the app did not listen on $PORT (%d) within %s: make the web process listen on the port in $PORT", g.Port, a.o.StartTimeout)
		case <-time.After(delay):
		}
	}
}

// logFile is where a gear's output goes (named with its process type, for
// the app's own code).
func (a *Agent) logFile(g *store.Gear) string {
	kind := ""
	if g.Service == "" {
		kind = g.Kind()
	}
	return filepath.Join(a.o.Layout.Logs(g.AppID), applog.FileName(g.ID, kind))
}

func (a *Agent) logTail(g *store.Gear, n int) string {
	gearID := g.ID
	data, _ := os.ReadFile(a.logFile(g))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	if len(lines) > 0 && lines[0] != "" {
		b.WriteString("last lines of its log:\n")
	}
	for _, s := range lines {
		if l, ok := applog.Parse(gearID, s); ok {
			fmt.Fprintf(&b, "  %s\n", l.Text)
		}
	}
	return b.String()
}

// stopGear runs pre_stop, stops the shim (which stops the app's process
// group), runs post_stop and removes the gear's runtime directory.
func (a *Agent) stopGear(ctx context.Context, g store.Gear, out io.Writer) {
	if a.remote(g) {
		a.stopRemote(ctx, g)
		return
	}
	dir := a.o.Layout.Gear(g.ID)
	var dep store.Deployment
	var app store.App
	haveDep := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(g.AppKey, &app); err != nil {
			return err
		}
		return tx.Get(store.DeploymentKey(g.AppID, g.Deployment), &dep)
	}) == nil
	run := func(name string) {
		if !haveDep || g.State == store.GearOneOff || g.State == store.GearStandby { // their app did not run
			return
		}
		if hook := a.hook(&dep, name); hook != "" {
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := a.runGearHook(hctx, &app, &g, hook, dep.Dir, a.o.Env(&app, &dep, &g), out); err != nil {
				a.log.Warn("hook failed", "hook", name, "gear", g.ID, "err", err)
			}
			cancel()
		}
	}
	run("pre_stop")
	grace := store.DefaultStopGrace
	if haveDep {
		grace = app.Grace()
	}
	a.rt.Stop(g.ID, grace+5*time.Second) // the shim's own grace, then the shim
	run("post_stop")
	a.removeNamespaced(g)
	os.RemoveAll(dir)
}

// imageEnv is a gear's environment for an image: the image's own
// variables, then the platform's and the app's (which win), except PATH,
// which stays the image's (its programs are not where the host's are).
func imageEnv(imageVars, gear []string) []string {
	out := append([]string(nil), imageVars...)
	imagePath := slices.ContainsFunc(imageVars, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
	for _, kv := range gear {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" && imagePath {
			continue
		}
		out = slices.DeleteFunc(out, func(o string) bool { return strings.HasPrefix(o, k+"=") })
		out = append(out, kv)
	}
	return out
}
