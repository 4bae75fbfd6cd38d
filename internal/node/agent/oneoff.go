package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

// GearBuilding marks the short-lived gear record of a build: it gives the
// build a network namespace (for package registries) through the same
// plan as gears, and is never routed.
const GearBuilding = "building"

// runGearHook runs an action hook of a running gear: sandboxed in the
// gear's own network namespace, or on the host in process mode.
func (a *Agent) runGearHook(ctx context.Context, app *store.App, g *store.Gear, path, dir string, env []string, out io.Writer) error {
	if g.Isolation != Namespaces {
		return a.o.RunHost(ctx, dir, env, out, 0, path)
	}
	netnsPath := netplan.NetnsPath(a.o.Network.Normalize().NetnsName(g.ID))
	return a.runc(ctx, app, netnsPath, dir, env, out, 0, []string{path})
}

// runOneOff runs a build step or hook of an app outside any gear.
func (a *Agent) runOneOff(ctx context.Context, appKey, dir string, env []string, out io.Writer, timeout time.Duration, args []string) error {
	if !a.namespaced() {
		return a.o.RunHost(ctx, dir, env, out, timeout, args...)
	}
	var app store.App
	g := store.Gear{ID: "b" + newID()[:11], State: GearBuilding, Isolation: Namespaces, Created: time.Now().UTC()}
	err := a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if err := a.ensureUID(tx, &app); err != nil {
			return err
		}
		ip, err := a.allocIP(tx, map[netip.Addr]bool{})
		if err != nil {
			return err
		}
		g.AppID, g.AppKey, g.IP = app.ID, appKey, ip
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if err != nil {
		return err
	}
	defer func() {
		a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
		a.netRemove(g.ID)
	}()
	if err := a.netAdd(g.ID); err != nil {
		return fmt.Errorf("build network: %w", err)
	}
	if err := a.ownTree(app.UID, dir); err != nil {
		return err
	}
	netnsPath := netplan.NetnsPath(a.o.Network.Normalize().NetnsName(g.ID))
	return a.runc(ctx, &app, netnsPath, dir, env, out, timeout, args)
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

// runc runs args once in a sandbox of the app, in netnsPath, streaming
// output to out.
func (a *Agent) runc(ctx context.Context, app *store.App, netnsPath, dir string, env []string, out io.Writer, timeout time.Duration, args []string) error {
	id := "x" + newID()
	bundle := filepath.Join(a.o.Layout.RunDir(), "oneoff", id)
	defer os.RemoveAll(bundle)
	spec := a.sandboxSpec(app, id, env, dir)
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Path: a.o.Layout.Cache(app.ID)})
	spec.Args = append([]string{a.o.Exe, "gear-init", "--"}, args...)
	spec.NetnsPath = netnsPath
	spec.CgroupParent = a.cgroupParent(id)
	limits, err := SizeOf(app.GearSize)
	if err != nil {
		return err
	}
	if err := sandbox.SetLimits(spec.CgroupParent, limits); err != nil {
		return err
	}
	defer sandbox.RemoveCgroup(spec.CgroupParent)
	if err := sandbox.WriteBundle(bundle, spec); err != nil {
		return err
	}
	root := a.o.Layout.RuncRoot()
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	rargs := sandbox.RuncArgs(root, bundle, id)
	cmd := exec.Command(rargs[0], rargs[1:]...)
	cmd.Dir = bundle
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		exec.Command("runc", "--root", root, "kill", "--all", id, "KILL").Run()
		err = <-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%s did not finish within %s", filepath.Base(args[0]), timeout)
		}
	}
	exec.Command("runc", "--root", root, "delete", "-f", id).Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == 126 || ee.ExitCode() == 127 {
			return fmt.Errorf("%s could not be run in the gear (exit %d): is it a program with a #! line?", filepath.Base(args[0]), ee.ExitCode())
		}
		return fmt.Errorf("%s exited with status %d", filepath.Base(args[0]), ee.ExitCode())
	}
	return err
}

// withTimeout bounds ctx by d (0: no bound); the caller cancels when done,
// so nothing lingers until the timeout.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
