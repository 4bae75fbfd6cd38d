package agent

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

// GearBuilding marks the short-lived gear record of a build: it gives the
// build a network namespace (for package registries) through the same
// plan as gears, and is never routed.
const GearBuilding = "building"

// runGearHook runs an action hook of a running gear: sandboxed like it, in
// its network namespace (on the host in process mode).
func (a *Agent) runGearHook(ctx context.Context, app *store.App, g *store.Gear, path, dir string, env []string, out io.Writer) error {
	sb, err := a.oneOffSandbox(app, dir, env)
	if err != nil {
		return err
	}
	return a.driverFor(*g).RunOnce(ctx, g.ID, sb, out, 0, []string{path})
}

// oneOffSandbox is a one-off run of app in dir: like its gears, with the
// build caches.
func (a *Agent) oneOffSandbox(app *store.App, dir string, env []string) (gearrt.Sandbox, error) {
	sb, err := a.sandboxOf(app, newID(), "", dir, env)
	sb.Mounts = append(sb.Mounts, sandbox.Mount{Path: a.o.Layout.Cache(app.ID)})
	return sb, err
}

// runOneOff runs a build step or hook of an app outside any gear.
func (a *Agent) runOneOff(ctx context.Context, appKey, dir string, env []string, out io.Writer, timeout time.Duration, args []string) error {
	if !a.rt.Caps().Isolated {
		return a.rt.RunOnce(ctx, "", gearrt.Sandbox{Cwd: dir, Env: env}, out, timeout, args)
	}
	app, g, done, err := a.buildGear(appKey)
	if err != nil {
		return err
	}
	defer done()
	if err := a.ownTree(app.UID, dir); err != nil {
		return err
	}
	sb, err := a.oneOffSandbox(&app, dir, env)
	if err != nil {
		return err
	}
	if a.o.BuildMemory > 0 { // builds are not bound by the gear size
		sb.Limits = Sizes["large"]
		sb.Limits.MemoryBytes = a.o.BuildMemory
		sb.LimitName = "the build limit, " + humanBytes(a.o.BuildMemory) + ": raise it with `gantry server --build-memory`"
	} else {
		sb.LimitName = "the gear size's, " + humanBytes(sb.Limits.MemoryBytes) + ": `gantry app set APP --gear-size` raises it"
	}
	return a.rt.RunOnce(ctx, g.ID, sb, out, timeout, args)
}

// buildGear records a "building" gear of the app on this machine with an
// address and a network namespace of its own (out through NAT, the app's
// egress policy), for build steps and hooks; done removes it.
func (a *Agent) buildGear(appKey string) (store.App, store.Gear, func(), error) {
	var app store.App
	g := store.Gear{ID: "b" + newID()[:11], State: GearBuilding, Isolation: Namespaces, Node: a.o.Node, Created: time.Now().UTC()}
	err := a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if err := a.ensureUID(tx, &app); err != nil {
			return err
		}
		ip, err := a.allocIP(tx, map[netip.Addr]bool{}, a.o.Node)
		if err != nil {
			return err
		}
		g.AppID, g.AppKey, g.IP = app.ID, appKey, ip
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if err != nil {
		return app, g, nil, err
	}
	done := func() {
		a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
		a.netRemove(g.ID)
	}
	if err := a.netAdd(g.ID); err != nil {
		done()
		return app, g, nil, fmt.Errorf("build network: %w", err)
	}
	return app, g, done, nil
}

// ownTree gives a build tree to the app's user, with the app's home and
// cache directories the build writes to.
func (a *Agent) ownTree(uid int, dir string) error {
	l := a.o.Layout
	appID := filepath.Base(filepath.Dir(filepath.Dir(dir)))
	for _, d := range []string{l.Home(appID), l.Cache(appID), l.Tmp(appID), l.Data(appID)} {
		os.MkdirAll(d, 0o700)
		chownTree(d, uid)
	}
	os.Chown(l.AppDir(appID), 0, uid)
	os.Chmod(l.AppDir(appID), 0o710)
	os.Chown(l.Deployments(appID), 0, uid)
	os.Chmod(l.Deployments(appID), 0o710)
	return chownTree(dir, uid)
}

func chownTree(dir string, uid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
}

// humanBytes writes a memory size the way users give it.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
