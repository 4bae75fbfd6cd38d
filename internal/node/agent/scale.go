package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// ErrNothingDeployed means an app has no deployment to run gears of.
var ErrNothingDeployed = errors.New("nothing is deployed yet")

// ScaleTo runs n gears of the app's active deployment: it starts the
// missing ones (routed once ready) or drains and stops the surplus (those
// with the fewest open connections first; open WebSockets stay until they
// end or the drain timeout). n = 0 idles the app: its route stays, and the
// router holds requests while it wakes.
func (a *Agent) ScaleTo(ctx context.Context, appKey string, n int, out io.Writer) error {
	unlock := a.appLock(appKey)
	defer unlock()
	var app store.App
	var dep store.Deployment
	var running []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if app.ActiveDeployment == "" {
			return ErrNothingDeployed
		}
		if err := tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep); err != nil {
			return err
		}
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			if g.AppKey == appKey && g.State == store.GearRunning && g.Web() {
				running = append(running, g)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	setScale := func(tx *store.Tx) error {
		var cur store.App
		if err := tx.Get(appKey, &cur); err != nil {
			return err
		}
		cur.Scale, cur.Idle, cur.Stopped = n, n == 0, false
		return tx.Put(appKey, &cur)
	}
	switch {
	case n > len(running):
		fresh, fail, err := a.startGears(ctx, &app, &dep, "", n-len(running), out)
		if err != nil {
			return err
		}
		err = a.o.Store.Update(func(tx *store.Tx) error {
			if err := putStates(tx, fresh, store.GearRunning); err != nil {
				return err
			}
			return setScale(tx)
		})
		if err != nil {
			return fail(err)
		}
		a.waitRouter(ctx)
	case n < len(running):
		// Drain the least busy gears; among equals, the newest.
		sort.Slice(running, func(i, j int) bool {
			ci, cj := a.conns(running[i]), a.conns(running[j])
			if ci != cj {
				return ci < cj
			}
			return running[i].Created.After(running[j].Created)
		})
		surplus := running[:len(running)-n]
		err := a.o.Store.Update(func(tx *store.Tx) error {
			if err := putStates(tx, surplus, store.GearDraining); err != nil {
				return err
			}
			return setScale(tx)
		})
		if err != nil {
			return err
		}
		a.waitRouter(ctx)
		a.drainAndStop(surplus)
	default:
		if err := a.o.Store.Update(setScale); err != nil {
			return err
		}
	}
	if n == 0 || app.Autoscaled() {
		a.standBy(ctx, &app, &dep) // for the wake or the next scale-up
	}
	// The workers run as recorded (after a lost machine, an interrupted
	// change); idling does not stop them.
	return a.scaleWorkers(ctx, appKey, "", 0, out)
}

// ScaleProcess runs n gears of a non-web process type of the app's active
// deployment, recording the count in the app's formation.
func (a *Agent) ScaleProcess(ctx context.Context, appKey, proc string, n int, out io.Writer) error {
	unlock := a.appLock(appKey)
	defer unlock()
	return a.scaleWorkers(ctx, appKey, proc, n, out)
}

// scaleWorkers sets proc's count to n (proc "": counts unchanged), then
// starts the worker gears the formation lacks and stops the surplus
// (SIGTERM, then the app's grace time), the newest first. The caller holds
// the app's lock.
func (a *Agent) scaleWorkers(ctx context.Context, appKey, proc string, n int, out io.Writer) error {
	var app store.App
	var dep store.Deployment
	var gears []store.Gear
	err := a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if app.ActiveDeployment == "" {
			if proc == "" {
				return nil
			}
			return ErrNothingDeployed
		}
		if err := tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep); err != nil {
			return err
		}
		if proc != "" {
			if dep.Processes[proc] == "" {
				return fmt.Errorf("%s has no process type %q: its Procfile has %s", app.FullName(), proc, procList(&dep))
			}
			if app.Formation == nil {
				app.Formation = map[string]int{}
			}
			app.Formation[proc] = n
			if err := tx.Put(appKey, &app); err != nil {
				return err
			}
		}
		all, err := store.ListGears(tx)
		gears = gears[:0]
		for _, g := range all {
			if g.AppKey == appKey && g.Worker() && (g.State == store.GearRunning || g.State == store.GearStarting) {
				gears = append(gears, g)
			}
		}
		return err
	})
	if err != nil || app.ActiveDeployment == "" {
		return err
	}
	want := store.Formation(&app, &dep)
	if app.Stopped {
		clear(want)
	}
	byProc := map[string][]store.Gear{}
	var surplus []store.Gear
	for _, g := range gears {
		if _, ok := want[g.Process]; !ok || g.Deployment != dep.ID {
			surplus = append(surplus, g) // a type the deployment lacks, or an old deployment's
			continue
		}
		byProc[g.Process] = append(byProc[g.Process], g)
	}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(want)) {
		have := byProc[p]
		switch {
		case len(have) > want[p]:
			sort.Slice(have, func(i, j int) bool { return have[i].Created.After(have[j].Created) })
			surplus = append(surplus, have[:len(have)-want[p]]...)
		case len(have) < want[p]:
			fresh, fail, err := a.startGears(ctx, &app, &dep, p, want[p]-len(have), out)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := a.o.Store.Update(func(tx *store.Tx) error { return putStates(tx, fresh, store.GearRunning) }); err != nil {
				errs = append(errs, fail(err))
			}
		}
	}
	if len(surplus) > 0 {
		if err := a.o.Store.Update(func(tx *store.Tx) error { return putStates(tx, surplus, store.GearDraining) }); err != nil {
			return err
		}
		a.drainAndStop(surplus)
	}
	return errors.Join(errs...)
}

func (a *Agent) conns(g store.Gear) int {
	if a.o.Router == nil {
		return 0
	}
	return a.o.Router.ActiveConns(g.Endpoint())
}

// waitRouter waits until the router follows the last store write.
func (a *Agent) waitRouter(ctx context.Context) {
	if a.o.Router == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a.o.Router.WaitApplied(wctx, a.o.Store.Rev())
}

// putStates records gears in state (the gears given are copies).
func putStates(tx *store.Tx, gears []store.Gear, state string) error {
	for _, g := range gears {
		g.State = state
		if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
			return err
		}
	}
	return nil
}
