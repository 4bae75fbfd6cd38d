// Package agent runs an app's gears on this machine and keeps them running:
// it starts each gear under a shim (see package shim), rolls out new
// deployments without dropping requests (start, health-check, switch the
// route, drain, stop the old gears), and on start re-attaches to the gears
// that are already running instead of restarting them.
//
// Concurrency: one mutex per app serialises rollouts, stops and deletes of
// that app. Draining old gears runs in goroutines that Run waits for. The
// agent writes gear records to the store; the router follows the store.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/artifact"
	"github.com/gantry-paas/gantry/internal/egress/enforce"

	"github.com/gantry-paas/gantry/internal/node/image"
	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"

	"github.com/gantry-paas/gantry/internal/node/disk"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/keylock"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/node/peer"
	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// Drainer is what the agent needs from the router: to know when a store
// revision is in force, and how many connections a gear still has.
type Drainer interface {
	WaitApplied(ctx context.Context, rev int64) error
	ActiveConns(endpoint string) int
}

// Options configure an Agent.
type Options struct {
	Store  *store.Store
	Layout layout.Layout
	// Node is this machine's name: the agent runs the gears recorded on
	// it and no other.
	Node string
	// Place picks the machines of new gears (nil: all on this one); Peers
	// reaches the other machines' agents.
	Place func(tx *store.Tx, app *store.App, n int) ([]string, error)
	Peers *peer.Client
	// Gearless: this machine has no node role (a cluster); what would
	// start a gear here (a cartridge, a one-off) is refused.
	Gearless bool
	// Artifacts is this machine's cache of packed builds (a cluster):
	// fetched by digest, handed on to the others.
	Artifacts *artifact.Cache
	// Images fetches apps' images (nil: images cannot be deployed here).
	Images *image.Puller
	Log    *slog.Logger
	Router Drainer
	// Exe is the gantry binary, run as "EXE shim DIR" for each gear.
	Exe string
	// IP gears listen on (plain-process mode: loopback).
	IP string
	// Ports gears are given, [PortMin, PortMax].
	PortMin, PortMax int
	// StartTimeout is how long a new gear has to accept connections.
	StartTimeout time.Duration
	// DrainTimeout bounds how long old gears keep open connections.
	DrainTimeout time.Duration
	// Env builds a gear's environment (see Env).
	Env func(app *store.App, dep *store.Deployment, g *store.Gear) []string
	// Hooks returns the path of a deployment's action hook, or "".
	Hook func(dep *store.Deployment, name string) string
	// RunHost runs a command on the host, streaming to out (process mode
	// hooks and build steps).
	RunHost func(ctx context.Context, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error
	// Isolation is Process or Namespaces.
	Isolation string
	// RuntimesDir holds the language runtimes (trees mounted read-only
	// into the gears whose deployment chose them).
	RuntimesDir string
	// BuildMemory limits one-off build steps' memory, apart from the app's
	// gear size (0: the gear size's). Their processes and CPU are the
	// largest size's.
	BuildMemory int64
	// Runtime starts and stops the gears' supervisors (nil: the real
	// driver of the isolation mode; tests pass a runtime.Recorder).
	Runtime gearrt.Driver
	// Network is the base plan of namespaced gears (prefix, subnet, host
	// ports); the agent adds the gears.
	Network netplan.Plan
	// GearResolvConf, if set, is the resolv.conf namespaced gears see: the
	// platform's DNS forwarder on the gateway (a host whose resolvers
	// are on loopback, as systemd-resolved's stub, is unreachable from a
	// gear's namespace).
	GearResolvConf string
	// Disks, if set, gives each app a filesystem of its own sized by its
	// gear size (disk limits).
	Disks *disk.Images
	// UIDMin..UIDMax are the Unix users given to apps.
	UIDMin, UIDMax int
	// EgressRouter is where the egress router listens on the gateway
	// (nil: no router): its ports are open to the gears on the bridge.
	EgressRouter *enforce.RouterPorts
	// Egress applies an app's outbound policy in its gears' namespaces
	// (nil: none); the agent calls it before a namespaced gear starts.
	Egress interface{ Apply(appKey string) error }
}

// Agent supervises gears.
type Agent struct {
	o     Options
	log   *slog.Logger
	rt    gearrt.Driver // the gears' supervisors, in the isolation mode
	proc  gearrt.Driver // the process driver, for gears a process-mode server left
	locks keylock.Locks // one per app
	// dirLocks: one per app, while a gear placed here by another machine
	// makes the app's directory ready.
	dirLocks keylock.Locks
	wg       sync.WaitGroup
	ctx      context.Context // the agent's own lifetime, set by Run
	ready    chan struct{}

	svcMu    sync.Mutex // guards svcCache
	svcCache map[string]serviceCache
}

// UIDRange is the block of 65,536 Unix user ids a server gives its apps:
// 200000-265535 for the default net prefix, and a block of its own (from a
// hash of the prefix) for any other, so that several servers on one host
// never give two apps the same user.
func UIDRange(prefix string) (lo, hi int) {
	block := 0
	if prefix != "gantry" {
		h := fnv.New32a()
		h.Write([]byte(prefix))
		block = 1 + int(h.Sum32()%30000)
	}
	lo = 200000 + block*65536
	return lo, lo + 65535
}

// New validates the options.
func New(o Options) (*Agent, error) {
	if o.Store == nil || o.Layout.Root == "" || o.Exe == "" || o.Env == nil || o.RunHost == nil {
		return nil, errors.New("agent: Store, Layout, Exe, Env and RunHost are required")
	}
	if o.Node == "" {
		o.Node = "local"
	}
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	if o.PortMin == 0 {
		o.PortMin, o.PortMax = 20000, 29999
	}
	if o.PortMax < o.PortMin {
		return nil, fmt.Errorf("agent: port range %d-%d is empty", o.PortMin, o.PortMax)
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Isolation == "" {
		o.Isolation = Process
	}
	if o.Isolation != Process && o.Isolation != Namespaces {
		return nil, fmt.Errorf("agent: unknown isolation %q", o.Isolation)
	}
	if o.UIDMin == 0 {
		o.UIDMin, o.UIDMax = UIDRange(o.Network.Normalize().Prefix)
	}
	if o.Isolation == Namespaces {
		if err := o.Network.Normalize().Validate(); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if err := os.MkdirAll(o.Layout.RuncRoot(), 0o700); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if err := os.MkdirAll(o.Layout.GearsDir(), 0o750); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{o: o, log: o.Log.With("component", "agent"), ready: make(chan struct{}), rt: o.Runtime, proc: o.Runtime}
	if a.rt == nil {
		proc := &gearrt.Process{Exe: o.Exe, Dir: o.Layout.Gear, RunHost: o.RunHost}
		a.rt, a.proc = proc, proc
		if o.Isolation == Namespaces {
			a.rt = &gearrt.Namespaces{Process: *proc, Cgroup: a.cgroupParent, RuncRoot: o.Layout.RuncRoot(),
				Plan:  a.currentPlan,
				Netns: func(id string) string { return netplan.NetnsPath(a.o.Network.Normalize().NetnsName(id)) },
				Log:   a.log,
				Init:  o.Exe, ResolvConf: o.GearResolvConf, OneOffs: filepath.Join(o.Layout.RunDir(), "oneoff")}
		}
	}
	return a, nil
}

// appLock serialises the changes of an app's gears: in this process,
// and in a cluster among every machine's agent (a deploy on one, the
// scheduler's failover on another).
func (a *Agent) appLock(appKey string) func() {
	unlock := a.locks.Lock(appKey)
	if a.o.Place == nil {
		return unlock
	}
	ctx, cancel := context.WithTimeout(context.Background(), store.DefaultWait*6)
	defer cancel()
	shared, err := a.o.Store.Lock(ctx, "app:"+store.AppName(appKey))
	if err != nil {
		a.log.Warn("the cluster-wide lock of the app could not be had: going on with this machine's", "app", appKey, "err", err)
		return unlock
	}
	return func() { shared(); unlock() }
}

// Run re-attaches to running gears, then supervises them until ctx ends.
// Gears keep running after Run returns: stopping the server is not
// stopping the apps.
func (a *Agent) Run(ctx context.Context) error {
	a.ctx = ctx
	a.reattach(ctx)
	close(a.ready)
	if a.rt.Caps().Isolated && a.o.Network.Overlay != nil {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.followOverlay(ctx) }()
	}
	if a.o.Peers != nil { // a cluster: trees fetched from other machines
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			t := time.NewTicker(10 * time.Minute)
			defer t.Stop()
			for {
				a.pruneBuilds()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return nil
		case <-t.C:
			a.supervise(ctx)
		}
	}
}

// Ready is closed once Run has re-attached to existing gears.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// reattach adopts the gears recorded in the store: a live shim is left
// alone; a gear whose shim is gone (the machine rebooted) is started again;
// a gear that was draining when the server stopped is stopped now.
func (a *Agent) reattach(ctx context.Context) {
	if err := a.claimUnplaced(); err != nil {
		a.log.Error("recording this machine's gears", "err", err)
	}
	gears, err := a.gears("")
	if err != nil {
		a.log.Error("listing gears", "err", err)
		return
	}
	a.mountDisks() // after a reboot, before any gear starts
	// Building gears belong to builds the stop interrupted.
	a.o.Store.Update(func(tx *store.Tx) error {
		for _, g := range gears {
			if g.State == GearBuilding {
				tx.Delete(store.GearKey(g.ID))
			}
		}
		return nil
	})
	if err := a.syncNetwork(); err != nil {
		a.log.Error("reconciling the gear network", "err", err)
	}
	adopted := 0
	for _, g := range gears {
		if g.State == GearBuilding {
			continue
		}
		st, _ := a.rt.State(g.ID)
		alive := st.Alive
		switch {
		case g.State == store.GearDraining || g.State == store.GearStopped || g.State == store.GearOneOff:
			// (a one-off's command ended with the server that ran it)
			a.stopGear(ctx, g, io.Discard)
			a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
			a.netRemove(g.ID)
		case g.State == store.GearStarting:
			// The change that started it (a deploy, a scale) died with the
			// server before the gear was routed: undo it. The app's count
			// is restored below, with gears that are checked before they
			// serve.
			a.log.Warn("gear left starting by an interrupted change: removing it", "gear", g.ID, "app", g.AppKey)
			a.stopGear(ctx, g, io.Discard)
			a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
			a.netRemove(g.ID)
		case g.State == store.GearStandby && !alive:
			a.discard(g) // the next wake starts a gear as usual
		case alive:
			adopted++
		default:
			a.log.Warn("gear not running, starting it", "gear", g.ID, "app", g.AppKey)
			if err := a.rt.Start(g.ID); err != nil {
				a.log.Error("restarting gear", "gear", g.ID, "err", err)
			}
		}
	}
	a.stopOrphans(ctx)
	a.log.Info("re-attached to gears", "running", adopted, "total", len(gears))
	a.rt.CleanOneOffs()
	if a.o.Place == nil { // in a cluster the scheduler's leader does it
		a.restoreCounts(ctx)
	}
}

// claimUnplaced records this machine as the node of gears from before
// nodes were recorded (they ran on the only machine there was).
func (a *Agent) claimUnplaced() error {
	return a.o.Store.Update(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if g.Node == "" {
				g.Node = a.o.Node
				if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Node is the name of the machine the agent runs gears on.
func (a *Agent) Node() string { return a.o.Node }

// restoreCounts starts the gears an app lacks after an interrupted change
// (its recorded scale and formation say how many it runs), in the
// background.
func (a *Agent) restoreCounts(ctx context.Context) {
	apps := a.apps()
	gears, _ := a.gears("")
	for _, app := range apps {
		var dep store.Deployment
		if app.ActiveDeployment == "" || a.o.Store.View(func(tx *store.Tx) error {
			return tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep)
		}) != nil || !store.Short(&app, &dep, gears) {
			continue
		}
		key, want := app.Key(), app.Scale
		a.log.Info("restoring the app's gear count after an interrupted change", "app", key, "scale", want, "formation", app.Formation)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.ScaleTo(ctx, key, want, io.Discard); err != nil {
				a.log.Error("restoring the app's gear count", "app", key, "err", err)
			}
		}()
	}
}

// supervise restarts shims that died (the shim itself restarts the app).
func (a *Agent) supervise(ctx context.Context) {
	gears, err := a.gears("")
	if err != nil {
		return
	}
	if a.o.Place != nil {
		a.stopOrphans(ctx)
	}
	for _, g := range gears {
		if g.State == store.GearOneOff {
			a.reapOneOff(ctx, g)
			continue
		}
		if g.State != store.GearRunning {
			continue
		}
		st, err := a.rt.State(g.ID)
		if err != nil || st.Status == shim.Stopped || st.Alive {
			continue
		}
		a.log.Warn("gear supervisor died, starting it again", "gear", g.ID, "app", g.AppKey)
		if err := a.rt.Start(g.ID); err != nil {
			a.log.Error("restarting gear", "gear", g.ID, "err", err)
		}
	}
}

// gears lists this machine's gears (of one app, or all).
func (a *Agent) gears(appID string) ([]store.Gear, error) {
	var out []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.Node == a.o.Node && (appID == "" || g.AppID == appID) {
				out = append(out, g)
			}
		}
		return err
	})
	return out, err
}

// GearStatus is what the agent knows about a gear's process.
type GearStatus struct {
	PID      int    `json:"pid"`
	Status   string `json:"status"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	// What the gear uses now (namespaced gears: its cgroup).
	Memory   int64         `json:"memory,omitempty"`
	CPU      time.Duration `json:"cpu,omitempty"`
	OOMKills int           `json:"oom_kills,omitempty"`
}

// Status reads a gear's process status, on whichever machine runs it.
func (a *Agent) Status(gearID string) GearStatus {
	var g store.Gear
	if a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }) == nil && a.remote(g) {
		addr, err := a.peerAddr(g.Node)
		if err != nil || a.o.Peers == nil {
			return GearStatus{Status: "unknown"}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := a.o.Peers.GearState(ctx, addr, gearID)
		if err != nil {
			return GearStatus{Status: "unreachable"}
		}
		return GearStatus(st)
	}
	return a.localStatus(gearID)
}

func (a *Agent) localStatus(gearID string) GearStatus {
	st, err := a.rt.State(gearID)
	if err != nil {
		return GearStatus{Status: "unknown"}
	}
	s := GearStatus{PID: st.PID, Status: st.Status, Restarts: st.Restarts, LastExit: st.LastExit}
	if st.Status != shim.Stopped && !st.Alive {
		s.Status, s.PID = "lost", 0
	}
	var spec shim.Spec
	if data, err := os.ReadFile(filepath.Join(a.o.Layout.Gear(gearID), shim.SpecFile)); err == nil && json.Unmarshal(data, &spec) == nil && spec.CgroupParent != "" {
		s.Memory, s.CPU, _ = cgroup.Usage(spec.CgroupParent)
		s.OOMKills = cgroup.OOMKills(spec.CgroupParent)
	}
	return s
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// allocPort picks a port no gear record holds and (with probe: the gear
// runs here) nothing on this host uses.
func (a *Agent) allocPort(tx *store.Tx, taken map[int]bool, probe bool) (int, error) {
	gears, err := store.ListGears(tx)
	if err != nil {
		return 0, err
	}
	for _, g := range gears {
		taken[g.Port] = true
	}
	n := a.o.PortMax - a.o.PortMin + 1
	start := int(time.Now().UnixNano() % int64(n))
	for i := 0; i < n; i++ {
		p := a.o.PortMin + (start+i)%n
		if taken[p] {
			continue
		}
		if probe {
			l, err := net.Listen("tcp", net.JoinHostPort(a.o.IP, fmt.Sprint(p)))
			if err != nil {
				continue
			}
			l.Close()
		}
		taken[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d for a new gear", a.o.PortMin, a.o.PortMax)
}

// cleanLogs removes the log files of gone gears in dir beyond the newest
// keep; the logs of gears that still exist (live) and of cron jobs stay
// whatever their age (a quiet database's log is old, not gone).
func cleanLogs(dir string, keep int, live map[string]bool) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	type f struct {
		p string
		t time.Time
	}
	var fs []f
	for _, p := range files {
		if gear, process := applog.GearOf(p); live[gear] || process == "cron" {
			continue // a cron job's log is one rotated file per job
		}
		if fi, err := os.Stat(p); err == nil {
			fs = append(fs, f{p, fi.ModTime()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].t.After(fs[j].t) })
	for _, old := range fs[min(keep, len(fs)):] {
		os.Remove(old.p)
		os.Remove(old.p + ".1")
	}
}

// apps lists every app (nil when the store cannot be read).
func (a *Agent) apps() []store.App {
	var apps []store.App
	a.o.Store.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	})
	return apps
}

// driverFor is the runtime of a gear: the mode's, or the process driver
// for a plain gear a server in process mode started.
func (a *Agent) driverFor(g store.Gear) gearrt.Driver {
	if g.Isolation != Namespaces {
		return a.proc
	}
	return a.rt
}
