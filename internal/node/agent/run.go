package agent

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// oneOffCommand keeps a one-off gear alive while commands run in it.
const oneOffCommand = "exec sleep 2147483647"

// StartOneOff starts a fresh gear of the app's active deployment on this
// machine for a command (`gantry run`): the app's code, env (its
// cartridges' too), isolation and egress policy, no hooks, never routed.
// The caller runs the command in it (ExecCommand with its ID) and calls
// done, which stops and removes it.
func (a *Agent) StartOneOff(ctx context.Context, appKey string) (gearID string, done func(), err error) {
	var app store.App
	var dep store.Deployment
	g := store.Gear{ID: newID(), AppKey: appKey, State: store.GearOneOff, Isolation: a.o.Isolation, Node: a.o.Node, Created: time.Now().UTC()}
	err = a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if app.ActiveDeployment == "" {
			return fmt.Errorf("%s has nothing deployed yet: push code first", app.FullName())
		}
		if err := tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep); err != nil {
			return err
		}
		g.AppID, g.Deployment = app.ID, dep.ID
		if a.rt.Caps().Isolated {
			if err := a.ensureUID(tx, &app); err != nil {
				return err
			}
			ip, err := a.allocIP(tx, map[netip.Addr]bool{}, a.o.Node)
			if err != nil {
				return err
			}
			g.IP, g.Port = ip, GearPort
		} else {
			port, err := a.allocPort(tx, map[int]bool{}, true)
			if err != nil {
				return err
			}
			g.IP, g.Port = a.o.IP, port
		}
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if err != nil {
		return "", nil, err
	}
	done = func() {
		a.stopGear(context.WithoutCancel(ctx), g, io.Discard)
		a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
		a.netRemove(g.ID)
	}
	unlock := a.dirLocks.Lock(app.ID)
	err = a.PrepareAppDir(&app)
	dir := dep.Dir // built here
	if _, serr := os.Stat(dir); err == nil && serr != nil {
		dir, err = a.ensureDeployment(ctx, &dep) // built on another machine
	}
	unlock()
	if err != nil {
		done()
		return "", nil, fmt.Errorf("the deployment's files: %w", err)
	}
	idle := dep
	idle.Dir = dir
	idle.Command = oneOffCommand
	if err := a.startOne(ctx, &app, &idle, &g, io.Discard); err != nil {
		done()
		return "", nil, err
	}
	// A command can go in once the gear's process runs.
	for deadline := time.Now().Add(a.o.StartTimeout); !a.driverFor(g).Running(g.ID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			done()
			return "", nil, fmt.Errorf("the one-off gear did not start within %s: %s", a.o.StartTimeout, a.logTail(app.ID, g.ID, 5))
		}
	}
	return g.ID, done, nil
}
