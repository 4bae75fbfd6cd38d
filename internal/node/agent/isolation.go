package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"

	"github.com/gantry-paas/gantry/internal/node/disk"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

// Isolation modes.
const (
	Process    = "process"    // plain processes on loopback
	Namespaces = "namespaces" // runc, own netns and IP, own user, cgroup limits
)

// GearPort is the port every namespaced gear listens on, on its own IP.
const GearPort = 8080

// Sizes are the gear sizes users choose from.
var Sizes = map[string]sandbox.Limits{
	"small":  {MemoryBytes: 512 << 20, Pids: 250, CPUShares: 1024},
	"medium": {MemoryBytes: 1 << 30, Pids: 500, CPUShares: 2048},
	"large":  {MemoryBytes: 2 << 30, Pids: 1000, CPUShares: 4096},
}

// SizeOf returns the limits of a size name ("" is small).
func SizeOf(name string) (sandbox.Limits, error) {
	if name == "" {
		name = "small"
	}
	l, ok := Sizes[name]
	if !ok {
		return l, fmt.Errorf("unknown gear size %q: choose small, medium or large", name)
	}
	return l, nil
}

// Isolation is the mode in force.
func (a *Agent) Isolation() string { return a.o.Isolation }

// cgroupParent is a gear's cgroup: under the server's net prefix, so that
// several servers on one host (tests, a simulated cluster) never share
// one ("gantry/ID" by default).
func (a *Agent) cgroupParent(gearID string) string {
	return a.o.Network.Normalize().Prefix + "/" + gearID
}

// plan is the desired network: every gear record with an address.
func (a *Agent) plan(tx *store.Tx) (netplan.Plan, error) {
	p := a.o.Network
	p.Gears, p.Remote = nil, nil
	gears, err := store.ListGears(tx)
	if err != nil {
		return p, err
	}
	for _, g := range gears {
		if g.Isolation != Namespaces {
			continue
		}
		ip, err := netip.ParseAddr(g.IP)
		if err != nil {
			continue
		}
		if a.remote(g) {
			p.Remote = append(p.Remote, netplan.Gear{ID: g.ID, App: g.AppID, IP: ip})
		} else {
			p.Gears = append(p.Gears, netplan.Gear{ID: g.ID, App: g.AppID, IP: ip, Parked: g.State == store.GearStandby})
		}
	}
	if p.Overlay != nil {
		if p.Overlay, err = a.overlay(tx); err != nil {
			return p, err
		}
	}
	// The egress router's ports are open on the gateway to every gear;
	// each gear's own ruleset lets only bound apps use them.
	if r := a.o.EgressRouter; r != nil {
		p.HostTCPPorts = append(append(append([]uint16(nil), p.HostTCPPorts...), r.Proxy), r.Redirects...)
		apps, err := store.ListApps(tx)
		if err != nil {
			return p, err
		}
		for _, app := range apps {
			if app.EgressRouter != nil {
				for _, t := range app.EgressRouter.TCP {
					p.HostTCPPorts = append(p.HostTCPPorts, uint16(t.Port))
				}
			}
		}
	}
	return p, nil
}

// ApplyEgressRouterPorts opens the gateway to the egress router's ports
// as they are now (TCP proxy ports come and go).
func (a *Agent) ApplyEgressRouterPorts() error { return a.rt.RefreshNetwork() }

// syncNetwork reconciles the whole network with the gears in the store:
// at start, and whenever the incremental path is in doubt.
func (a *Agent) syncNetwork() error { return a.rt.SyncNetwork() }

// netAdd gives new gears their network (the hot path of a gear start).
func (a *Agent) netAdd(ids ...string) error { return a.rt.AddNetwork(ids...) }

// netRemove takes removed gears' network away and updates the rules.
func (a *Agent) netRemove(ids ...string) error { return a.rt.RemoveNetwork(ids...) }

// currentPlan is the network there should be now.
func (a *Agent) currentPlan() (netplan.Plan, error) {
	var p netplan.Plan
	err := a.o.Store.View(func(tx *store.Tx) error {
		var err error
		p, err = a.plan(tx)
		return err
	})
	return p, err
}

func gearIDs(gears []store.Gear) []string {
	ids := make([]string, len(gears))
	for i, g := range gears {
		ids[i] = g.ID
	}
	return ids
}

// overlay is the configured overlay with the other machines that have
// a gear block.
func (a *Agent) overlay(tx *store.Tx) (*netplan.Overlay, error) {
	o := *a.o.Network.Overlay
	o.Peers = nil
	nodes, err := store.ListNodes(tx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		block, err := netip.ParsePrefix(n.GearBlock)
		if n.Name == a.o.Node || err != nil {
			continue
		}
		addr, err := netip.ParseAddr(n.Address)
		if err != nil || !addr.Is4() {
			a.log.Warn("a machine without an IPv4 address is left out of the gear overlay", "node", n.Name, "address", n.Address)
			continue
		}
		if o.Mode == netplan.OverlayWireGuard && n.OverlayKey == "" {
			a.log.Warn("a machine without a WireGuard key is left out of the gear overlay", "node", n.Name)
			continue
		}
		o.Peers = append(o.Peers, netplan.Peer{Name: n.Name, Block: block, Underlay: addr, PublicKey: n.OverlayKey})
	}
	return &o, nil
}

// blockOf is the block of the gear subnet where a machine's gears get
// their addresses: this machine's own, another's from its record.
func (a *Agent) blockOf(tx *store.Tx, node string) (netip.Prefix, error) {
	if node == "" || node == a.o.Node || a.o.Network.Overlay == nil {
		return a.o.Network.Normalize().Block, nil
	}
	var n store.Node
	if err := tx.Get(store.NodeKey(node), &n); err != nil {
		return netip.Prefix{}, fmt.Errorf("machine %s: %w", node, err)
	}
	b, err := netip.ParsePrefix(n.GearBlock)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("machine %s has no block of the gear subnet (does it run namespaced gears?)", node)
	}
	return b, nil
}

// allocIP picks a free gear address in the block of the gear's machine.
func (a *Agent) allocIP(tx *store.Tx, taken map[netip.Addr]bool, node string) (string, error) {
	gears, err := store.ListGears(tx)
	if err != nil {
		return "", err
	}
	for _, g := range gears {
		if ip, err := netip.ParseAddr(g.IP); err == nil {
			taken[ip] = true
		}
	}
	block, err := a.blockOf(tx, node)
	if err != nil {
		return "", err
	}
	key := ""
	if a.o.Network.Overlay != nil {
		key = node
	}
	lastIP, _ := netip.ParseAddr(store.LastGearIP(tx, key))
	ip, err := netplan.Allocate(block, taken, lastIP)
	if err != nil {
		return "", err
	}
	taken[ip] = true
	return ip.String(), store.SetLastGearIP(tx, key, ip.String())
}

// ensureUID gives the app a Unix user id from the configured range.
func (a *Agent) ensureUID(tx *store.Tx, app *store.App) error {
	if app.UID != 0 {
		return nil
	}
	apps, err := store.ListApps(tx)
	if err != nil {
		return err
	}
	used := map[int]bool{}
	for _, o := range apps {
		used[o.UID] = true
	}
	for uid := a.o.UIDMin; uid <= a.o.UIDMax; uid++ {
		if !used[uid] {
			app.UID = uid
			return tx.Put(app.Key(), app)
		}
	}
	return fmt.Errorf("no free user id in %d-%d for a new app", a.o.UIDMin, a.o.UIDMax)
}

// sandboxOf is what a gear of app is made of: its command in dir, its
// user's directories, the host paths it sees, its size's limits.
func (a *Agent) sandboxOf(app *store.App, id, command, dir string, env []string) (gearrt.Sandbox, error) {
	limits, err := SizeOf(app.GearSize)
	if err != nil {
		return gearrt.Sandbox{}, err
	}
	l := a.o.Layout
	ss := a.sandboxSpec(app, id, env, dir)
	// The language runtime the build chose, read-only; only a tree of the
	// platform's runtimes directory (the variable is the platform's own:
	// users may not set GANTRY_ names).
	for _, kv := range env {
		if root, ok := strings.CutPrefix(kv, "GANTRY_RUNTIME_ROOT="); ok && a.o.RuntimesDir != "" &&
			filepath.Dir(filepath.Clean(root)) == filepath.Clean(a.o.RuntimesDir) {
			ss.Mounts = append(ss.Mounts, sandbox.Mount{Path: root, ReadOnly: true})
		}
	}
	return gearrt.Sandbox{ID: id, Command: command, Cwd: dir, Env: env, UID: app.UID, Hostname: ss.Hostname, Mounts: ss.Mounts,
		Limits: limits, Private: []string{l.Data(app.ID), l.Tmp(app.ID), l.Home(app.ID)}, Traverse: []string{l.AppDir(app.ID)}}, nil
}

func (a *Agent) sandboxSpec(app *store.App, id string, env []string, dir string) sandbox.Spec {
	l := a.o.Layout
	return sandbox.Spec{
		ID: id, Env: env, Cwd: dir, UID: uint32(app.UID), GID: uint32(app.UID),
		Hostname: app.Name + "-" + app.Domain, ResolvConf: a.o.GearResolvConf,
		Mounts: []sandbox.Mount{
			{Path: dir},
			{Path: l.Data(app.ID)},
			{Path: l.Tmp(app.ID)},
			{Path: l.Home(app.ID)},
			{Path: l.Logs(app.ID), ReadOnly: true},
			// The static cartridge's server is Gantry itself.
			{Path: a.o.Exe, ReadOnly: true},
		},
	}
}

// removeNamespaced removes a stopped gear's cgroup; its network goes with
// the next reconcile.
func (a *Agent) removeNamespaced(g store.Gear) {
	if g.Isolation != Namespaces {
		return
	}
	a.rt.Release(g.ID)
}

// RunSandboxed runs a one-off command of the app (a build step or hook)
// sandboxed like its gears, in the network namespace of a build gear, and
// streams its output to out. In process mode it runs on the host.
func (a *Agent) RunSandboxed(ctx context.Context, appKey, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error {
	return a.runOneOff(ctx, appKey, dir, env, out, timeout, args)
}

// AllowHostPort lets gears reach a port of the host on the bridge (the SSH
// endpoint, bound after the agent was made). Call before Run.
func (a *Agent) AllowHostPort(port uint16) {
	a.o.Network.HostTCPPorts = append(a.o.Network.HostTCPPorts, port)
}

// namespacedGears reads an app and its namespaced gears (cartridges
// included).
func (a *Agent) namespacedGears(appKey string) (store.App, []store.Gear, error) {
	var app store.App
	var gears []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.AppKey == appKey && g.Isolation == Namespaces {
				gears = append(gears, g)
			}
		}
		return err
	})
	return app, gears, err
}

// Resize applies the app's gear size to its running gears, live. In
// process mode sizes are recorded but not enforced.
func (a *Agent) Resize(ctx context.Context, appKey string) error {
	app, gears, err := a.namespacedGears(appKey)
	if err != nil {
		return err
	}
	limits, err := SizeOf(app.GearSize)
	if err != nil {
		return err
	}
	if a.o.Disks != nil && a.o.Disks.Has(app.ID) {
		// A larger size grows the disk at once; a smaller one keeps it
		// (ext4 does not shrink while in use).
		err := a.o.Disks.Grow(app.ID, a.o.Layout.AppDir(app.ID), diskSize(app.GearSize))
		if errors.Is(err, disk.ErrGrowLater) {
			a.log.Warn("the app's disk limit grows at its next mount", "app", app.FullName(), "why", err.Error())
		} else if err != nil {
			return err
		}
	}
	for _, g := range gears {
		if err := sandbox.SetLimits(a.cgroupParent(g.ID), limits); err != nil {
			return fmt.Errorf("gear %s: %w", g.ID, err)
		}
	}
	return nil
}
