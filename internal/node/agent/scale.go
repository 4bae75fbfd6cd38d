package agent

import (
	"context"
	"errors"
	"io"
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
			if g.AppKey == appKey && g.State == store.GearRunning && g.Service == "" {
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
		fresh, fail, err := a.startGears(ctx, &app, &dep, n-len(running), out)
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
		return a.o.Store.Update(setScale)
	}
	return nil
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
