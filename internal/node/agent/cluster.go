package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/peer"
)

// Gears on other machines. The agent that changes an app (a deploy, a
// scale) records the new gears on the machines placement chose; it starts
// its own, and asks each other machine's agent, over the peer API, to
// start the ones placed there (that agent fetches the deployment's tree
// from a machine that has it). Stops go the same way. An agent runs only
// the gears recorded on its machine, and stops any it finds running
// without a record (a machine that comes back after its gears were moved).

// remote reports whether a gear runs on another machine.
func (a *Agent) remote(g store.Gear) bool { return g.Node != "" && g.Node != a.o.Node }

// peerAddr is where a machine's agent answers.
func (a *Agent) peerAddr(node string) (string, error) {
	var n store.Node
	err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.NodeKey(node), &n) })
	if err != nil {
		return "", fmt.Errorf("machine %s: %w", node, err)
	}
	if n.Peer == "" {
		return "", fmt.Errorf("machine %s has no cluster port", node)
	}
	return n.Peer, nil
}

// place picks the machines of n new gears (all this one without a
// placer, or for isolated gears without an overlay to reach them).
func (a *Agent) place(tx *store.Tx, app *store.App, n int) ([]string, error) {
	out := make([]string, n)
	if a.o.Place == nil || (a.rt.Caps().Isolated && a.o.Network.Overlay == nil) {
		for i := range out {
			out[i] = a.o.Node
		}
		return out, nil
	}
	return a.o.Place(tx, app, n)
}

// nodeAddress is the address gears of a machine are reached at (process
// mode: the machine's advertised address).
func (a *Agent) nodeAddress(tx *store.Tx, node string) (string, error) {
	var n store.Node
	if err := tx.Get(store.NodeKey(node), &n); err != nil {
		return "", fmt.Errorf("machine %s: %w", node, err)
	}
	return n.Address, nil
}

// startRemote asks the machines of the remote gears to start them, at
// once, copying their progress to out. It returns the first failure.
func (a *Agent) startRemote(ctx context.Context, gears []store.Gear, out io.Writer) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sout := &syncWriter{w: out}
	for _, g := range gears {
		if !a.remote(g) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.startOn(ctx, g, sout)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("gear %s on %s: %w", g.ID, g.Node, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (a *Agent) startOn(ctx context.Context, g store.Gear, out io.Writer) error {
	if a.o.Peers == nil {
		return fmt.Errorf("gear %s is placed on %s, and this machine has no cluster port to ask it", g.ID, g.Node)
	}
	addr, err := a.peerAddr(g.Node)
	if err != nil {
		return err
	}
	return a.o.Peers.StartGear(ctx, addr, g.ID, out)
}

// stopRemote asks a gear's machine to stop it (best effort: a machine
// that is gone stops its gears when it comes back).
func (a *Agent) stopRemote(ctx context.Context, g store.Gear) {
	if a.o.Peers == nil {
		return
	}
	addr, err := a.peerAddr(g.Node)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = a.o.Peers.StopGear(sctx, addr, g.ID)
		cancel()
	}
	if err != nil {
		a.log.Warn("stopping a gear on another machine", "gear", g.ID, "node", g.Node, "err", err)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// The peer API's side of this machine (peer.Local).

// StartGear starts a gear another machine placed here: the app's
// directory and the deployment's tree are made ready (fetched from a
// machine that has it), then the gear starts as any gear does.
func (a *Agent) StartGear(ctx context.Context, gearID string, out io.Writer) error {
	var g store.Gear
	var app store.App
	var dep store.Deployment
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(store.GearKey(gearID), &g); err != nil {
			return err
		}
		if err := tx.Get(g.AppKey, &app); err != nil {
			return err
		}
		return tx.Get(store.DeploymentKey(app.ID, g.Deployment), &dep)
	})
	if err != nil {
		return err
	}
	if g.Node != a.o.Node {
		return fmt.Errorf("gear %s is placed on %s, not on this machine (%s)", g.ID, g.Node, a.o.Node)
	}
	if err := a.ensurePort(&g); err != nil {
		return err
	}
	// Gears of one app start here side by side: one makes its directory
	// and fetches its tree, the others find them.
	unlock := a.dirLocks.Lock(app.ID)
	err = a.PrepareAppDir(&app)
	var dir string
	if err == nil {
		dir, err = a.ensureDeployment(ctx, &dep)
	}
	unlock()
	if err != nil {
		return fmt.Errorf("the deployment's files: %w", err)
	}
	dep.Dir = dir
	fail := func(err error) error {
		a.stopGear(context.WithoutCancel(ctx), g, io.Discard)
		return err
	}
	if err := a.startOne(ctx, &app, &dep, &g, out); err != nil {
		return fail(err)
	}
	if err := a.readyOne(ctx, &app, &dep, &g, out); err != nil {
		return fail(err)
	}
	return nil
}

// ensurePort gives a process gear placed here by another machine a port
// of its own: that machine chose one no gear record holds, but it cannot
// see what else listens on this host (this machine's etcd, another
// program). Left so, the app could not listen and its readiness check
// would find the other program: the router would send it the app's
// requests. The gear's record takes the new port; the machine that asked
// reads it back.
func (a *Agent) ensurePort(g *store.Gear) error {
	if a.rt.Caps().Isolated || g.Port == 0 {
		return nil // its own address: the port is the gear's
	}
	if l, err := net.Listen("tcp", g.Endpoint()); err == nil {
		l.Close()
		return nil
	}
	old := g.Port
	err := a.o.Store.Update(func(tx *store.Tx) error {
		var cur store.Gear
		if err := tx.Get(store.GearKey(g.ID), &cur); err != nil {
			return err
		}
		p, err := a.allocPort(tx, map[int]bool{}, true)
		if err != nil {
			return err
		}
		cur.Port = p
		*g = cur
		return tx.Put(store.GearKey(g.ID), &cur)
	})
	if err != nil {
		return fmt.Errorf("gear %s: port %d is in use on this machine, and another: %w", g.ID, old, err)
	}
	a.o.Log.Warn("a gear's port is in use on this machine: it gets another", "gear", g.ID, "port", old, "new", g.Port)
	return nil
}

// StopGear stops a gear of this machine.
func (a *Agent) StopGear(ctx context.Context, gearID string) error {
	g := store.Gear{ID: gearID, Node: a.o.Node}
	a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) })
	if a.remote(g) {
		return fmt.Errorf("gear %s runs on %s, not here", gearID, g.Node)
	}
	a.stopGear(ctx, g, io.Discard)
	return nil
}

// GearState is a gear's process state on this machine.
func (a *Agent) GearState(gearID string) (peer.State, error) {
	st := a.localStatus(gearID)
	return peer.State(st), nil
}

// LogDir is where this machine keeps an app's gear logs.
func (a *Agent) LogDir(appID string) string { return a.o.Layout.Logs(appID) }

// ArtifactPath is this machine's copy of a packed build, if it has it.
func (a *Agent) ArtifactPath(digest string) (string, bool) {
	if a.o.Artifacts == nil {
		return "", false
	}
	return a.o.Artifacts.Path(digest)
}

// DeploymentDir is this machine's copy of a deployment, if it has one.
func (a *Agent) DeploymentDir(appID, depID string) (string, bool) {
	if strings.ContainsAny(appID+depID, "/.") || appID == "" || depID == "" {
		return "", false
	}
	dir := a.o.Layout.Deployment(appID, depID)
	fi, err := os.Stat(dir)
	return dir, err == nil && fi.IsDir()
}

// ensureDeployment makes sure this machine has the deployment's tree,
// fetching it from the machine that built it, else from any machine up.
func (a *Agent) ensureDeployment(ctx context.Context, dep *store.Deployment) (string, error) {
	dir := a.o.Layout.Deployment(dep.AppID, dep.ID)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if a.o.Peers == nil {
		return "", fmt.Errorf("%s is missing and this machine has no cluster port to fetch it", dir)
	}
	var nodes []store.Node
	a.o.Store.View(func(tx *store.Tx) error {
		var err error
		nodes, err = store.ListNodes(tx)
		return err
	})
	live, _ := a.o.Store.Live()
	// The builder first.
	for i, n := range nodes {
		if n.Name == dep.Node {
			nodes[0], nodes[i] = nodes[i], nodes[0]
		}
	}
	os.MkdirAll(filepath.Dir(dir), 0o750)
	tmp := dir + ".fetch"
	if c := a.o.Artifacts; c != nil && dep.Artifact != "" {
		// By its digest: from this machine's cache, else from any
		// machine that holds it (checked as it arrives).
		var errs []error
		if _, ok := c.Path(dep.Artifact); !ok {
			for _, n := range nodes {
				if n.Name == a.o.Node || !live[n.Name] || n.Peer == "" {
					continue
				}
				err := a.o.Peers.FetchArtifact(ctx, n.Peer, dep.Artifact, *c)
				if err == nil {
					a.log.Info("fetched a build", "app", dep.AppID, "deployment", dep.ID, "artifact", dep.Artifact, "from", n.Name)
					break
				}
				errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			}
		}
		if _, ok := c.Path(dep.Artifact); !ok {
			return "", fmt.Errorf("no machine up could give the build of deployment %s (%s): %w", dep.ID, dep.Artifact, errors.Join(errs...))
		}
		os.RemoveAll(tmp)
		if err := c.Extract(dep.Artifact, tmp, os.Geteuid() == 0); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("unpacking the build of deployment %s: %w", dep.ID, err)
		}
		return dir, os.Rename(tmp, dir)
	}
	var errs []error
	for _, n := range nodes {
		if n.Name == a.o.Node || !live[n.Name] || n.Peer == "" {
			continue
		}
		os.RemoveAll(tmp)
		err := a.o.Peers.FetchDeployment(ctx, n.Peer, dep.AppID, dep.ID, tmp, os.Geteuid() == 0)
		if err == nil {
			if err := os.Rename(tmp, dir); err != nil {
				return "", err
			}
			a.log.Info("fetched a deployment", "app", dep.AppID, "deployment", dep.ID, "from", n.Name)
			return dir, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
	}
	return "", fmt.Errorf("no machine up could give deployment %s: %w", dep.ID, errors.Join(errs...))
}

// stopOrphans stops gears that run here without a record placing them
// here: their machine was counted lost and they run elsewhere now.
func (a *Agent) stopOrphans(ctx context.Context) {
	entries, err := os.ReadDir(a.o.Layout.GearsDir())
	if err != nil {
		return
	}
	mine := map[string]bool{}
	err = a.o.Store.View(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			if !a.remote(g) {
				mine[g.ID] = true
			}
		}
		return err
	})
	if err != nil {
		return // the store is away: change nothing
	}
	for _, e := range entries {
		if !e.IsDir() || mine[e.Name()] {
			continue
		}
		st, err := a.rt.State(e.Name())
		if err != nil {
			continue
		}
		if st.Alive {
			a.log.Warn("a gear runs here that no record places here (it was moved while this machine was away): stopping it", "gear", e.Name())
		}
		a.stopGear(ctx, store.Gear{ID: e.Name(), Node: a.o.Node}, io.Discard)
	}
}

// Evacuate moves an app's gears (web and workers) off a machine without
// dropping a request: as many new gears of each type start on the other
// machines (placement skips a cordoned one), the route switches to them
// in one write, and the old ones drain and stop. It returns how many
// gears moved.
func (a *Agent) Evacuate(ctx context.Context, appKey, node string, out io.Writer) (int, error) {
	unlock := a.appLock(appKey)
	defer unlock()
	var app store.App
	var dep store.Deployment
	var moving []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if g.AppKey == appKey && g.Node == node && (g.Web() || g.Worker()) && g.State == store.GearRunning {
				moving = append(moving, g)
			}
		}
		if len(moving) == 0 || app.ActiveDeployment == "" {
			return nil
		}
		return tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep)
	})
	if err != nil || len(moving) == 0 {
		return 0, err
	}
	count := map[string]int{}
	for _, g := range moving {
		count[g.Process]++
	}
	var fresh []store.Gear
	var fails []func(error) error
	fail := func(err error) error {
		for _, f := range fails {
			err = f(err)
		}
		return err
	}
	for _, proc := range slices.Sorted(maps.Keys(count)) {
		started, f, err := a.startGears(ctx, &app, &dep, proc, count[proc], out)
		if err != nil {
			return 0, fail(err)
		}
		fresh, fails = append(fresh, started...), append(fails, f)
	}
	err = a.o.Store.Update(func(tx *store.Tx) error {
		if err := putStates(tx, fresh, store.GearRunning); err != nil {
			return err
		}
		return putStates(tx, moving, store.GearDraining)
	})
	if err != nil {
		return 0, fail(err)
	}
	a.waitRouter(ctx)
	a.drainAndStop(moving)
	return len(moving), nil
}

// remoteServices asks a gear's machine what listens in it.
func (a *Agent) remoteServices(g store.Gear) ([]Service, error) {
	if a.o.Peers == nil {
		return nil, errors.New("this machine has no cluster port")
	}
	addr, err := a.peerAddr(g.Node)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := a.o.Peers.GearServices(ctx, addr, g.ID)
	if err != nil {
		return nil, err
	}
	var svcs []Service
	return svcs, json.Unmarshal(raw, &svcs)
}

// dialRemote connects to a service of a gear on another machine, through
// that machine's agent.
func (a *Agent) dialRemote(g store.Gear, target string) (net.Conn, error) {
	if a.o.Peers == nil {
		return nil, errors.New("this machine has no cluster port")
	}
	addr, err := a.peerAddr(g.Node)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.o.Peers.DialGear(ctx, addr, g.ID, target)
}

// GearServices lists what listens in a gear of this machine (peer API).
func (a *Agent) GearServices(gearID string) ([]byte, error) {
	var g store.Gear
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }); err != nil {
		return nil, err
	}
	if a.remote(g) {
		return nil, fmt.Errorf("gear %s runs on %s, not here", gearID, g.Node)
	}
	svcs, err := a.Services(g.AppKey, g.ID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(svcs)
}

// DialGear connects to one of a gear's own services from inside it (peer
// API): the machine that asks has checked the user; this one checks that
// target is a service of that gear, so the cluster port relays nothing
// else.
func (a *Agent) DialGear(gearID, target string) (net.Conn, error) {
	var g store.Gear
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }); err != nil {
		return nil, err
	}
	if a.remote(g) || g.State != store.GearRunning {
		return nil, fmt.Errorf("gear %s does not run here", gearID)
	}
	host, portStr, err := net.SplitHostPort(target)
	if err != nil || (host != g.IP && host != "127.0.0.1") {
		return nil, fmt.Errorf("%q is not an address of gear %s", target, gearID)
	}
	port, _ := strconv.Atoi(portStr)
	svcs, err := a.cachedServices(g, port)
	if err != nil {
		return nil, err
	}
	for _, s := range svcs {
		if s.Port == port {
			return a.driverFor(g).Dial(g.ID, target)
		}
	}
	return nil, fmt.Errorf("nothing listens on port %d in gear %s", port, gearID)
}

// followOverlay keeps this machine's part of the gear overlay current as
// the cluster changes: other machines' blocks (routes), and the other
// machines' gears of the apps that have gears here (the app sets, and
// the egress policies, which let an app's gears reach each other).
func (a *Agent) followOverlay(ctx context.Context) {
	var lastPeers string
	lastApps := map[string]string{}
	for range a.o.Store.Watch(ctx) {
		p, err := a.currentPlan()
		if err != nil {
			continue
		}
		peers := fmt.Sprint(p.Overlay.Peers)
		apps := map[string]string{} // app ID -> its remote gears
		local := map[string]bool{}
		for _, g := range p.Gears {
			local[g.App] = true
		}
		for _, g := range p.Remote {
			if local[g.App] {
				apps[g.App] += g.IP.String() + " "
			}
		}
		changed := peers != lastPeers
		var refresh []string
		for id, ips := range apps {
			if lastApps[id] != ips {
				changed = true
				refresh = append(refresh, id)
			}
		}
		for id := range lastApps {
			if _, ok := apps[id]; !ok {
				changed = true
				refresh = append(refresh, id)
			}
		}
		if !changed {
			continue
		}
		if err := a.rt.RefreshNetwork(); err != nil {
			a.log.Warn("updating the gear overlay", "err", err)
			continue
		}
		lastPeers, lastApps = peers, apps
		if a.o.Egress == nil {
			continue
		}
		for _, id := range refresh {
			if key := a.appKeyOf(id); key != "" {
				if err := a.o.Egress.Apply(key); err != nil {
					a.log.Warn("updating an app's egress policy for its gears on other machines", "app", key, "err", err)
				}
			}
		}
	}
}

// appKeyOf is the key of the app with the ID ("" if none).
func (a *Agent) appKeyOf(id string) string {
	var key string
	a.o.Store.View(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			if g.AppID == id {
				key = g.AppKey
				break
			}
		}
		return err
	})
	return key
}

// pruneBuilds removes this machine's copies of deployments that no
// record names any more (the machine that built them pruned them) and no
// gear here runs, and the packed builds no deployment names. A tree
// younger than an hour is left: it may be a build under way.
func (a *Agent) pruneBuilds() {
	named, used, artifacts := map[string]bool{}, map[string]bool{}, map[string]bool{}
	err := a.o.Store.View(func(tx *store.Tx) error {
		apps, err := store.ListApps(tx)
		if err != nil {
			return err
		}
		for _, app := range apps {
			deps, err := store.ListDeployments(tx, app.ID)
			if err != nil {
				return err
			}
			for _, d := range deps {
				named[d.AppID+"/"+d.ID] = true
				artifacts[d.Artifact] = true
			}
		}
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			used[g.AppID+"/"+g.Deployment] = true
		}
		return err
	})
	if err != nil {
		return // never on a partial view
	}
	apps, _ := os.ReadDir(filepath.Join(a.o.Layout.Root, "apps"))
	for _, app := range apps {
		deps, _ := os.ReadDir(a.o.Layout.Deployments(app.Name()))
		for _, d := range deps {
			key := app.Name() + "/" + d.Name()
			if named[key] || used[key] || strings.HasSuffix(d.Name(), ".fetch") {
				continue
			}
			if fi, err := d.Info(); err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue
			}
			if os.RemoveAll(a.o.Layout.Deployment(app.Name(), d.Name())) == nil {
				a.log.Info("removed a deployment pruned elsewhere", "app", app.Name(), "deployment", d.Name())
			}
		}
	}
	if a.o.Artifacts != nil {
		if n, _ := a.o.Artifacts.Keep(artifacts); n > 0 {
			a.log.Info("removed packed builds no deployment names", "count", n)
		}
	}
}
