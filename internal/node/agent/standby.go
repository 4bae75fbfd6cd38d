package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	gearrt "github.com/gantry-paas/gantry/internal/node/runtime"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// An idle app's wake would pay for a whole gear start: the supervisor,
// runc making the container, the network. A standby gear is made when
// the app idles instead: prepared and launched like any namespaced gear,
// its container made, its outbound policy and link in place, but without
// its address, for which its PID 1 (gear-init --wait-addr) holds the app.
// The wake gives it the address (startGears): what is left is the app's
// own start. It holds no app process, only the platform's few MiB.
// An autoscaled app keeps one too, made again after each change of its
// gears, for its next scale-up.
//
// On one machine only (in a cluster the wake may run anywhere), for
// gears of the host's programs without a pre_start hook (an image's
// command is PID 1; the hook runs in the gear's whole network).

var errNoStandby = errors.New("no standby gear is needed")

// standBy makes a standby web gear for an app that idled or scales
// itself, unless it has one. A failure is logged: the next wake or
// scale-up starts a gear as usual.
func (a *Agent) standBy(ctx context.Context, app *store.App, dep *store.Deployment) {
	if a.o.Place != nil || a.o.Gearless || !a.rt.Caps().Isolated || dep.Image != nil || a.hook(dep, "pre_start") != "" {
		return
	}
	var g store.Gear
	err := a.o.Store.Update(func(tx *store.Tx) error {
		var cur store.App
		if err := tx.Get(app.Key(), &cur); err != nil {
			return err
		}
		if !(cur.Idle || cur.Autoscaled()) || cur.Stopped || cur.ActiveDeployment != dep.ID {
			return errNoStandby // changed meanwhile
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(gears, func(g store.Gear) bool { return g.AppKey == app.Key() && g.State == store.GearStandby }) {
			return errNoStandby // it has one
		}
		if err := a.ensureUID(tx, app); err != nil {
			return err
		}
		g = store.Gear{ID: newID(), AppID: app.ID, AppKey: app.Key(), Deployment: dep.ID, State: store.GearStandby,
			Isolation: a.o.Isolation, Node: a.o.Node, Created: time.Now().UTC(), Port: GearPort}
		if g.IP, err = a.allocIP(tx, map[netip.Addr]bool{}, g.Node); err != nil {
			return err
		}
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if errors.Is(err, errNoStandby) {
		return
	}
	if err == nil {
		err = a.startOne(ctx, app, dep, &g, io.Discard)
	}
	if err != nil {
		a.log.Warn("making a standby gear for the idle app's wake", "app", app.FullName(), "err", err)
		if g.ID != "" {
			a.discard(g)
		}
		return
	}
	a.log.Debug("standby gear made", "app", app.FullName(), "gear", g.ID)
}

// standbys returns up to n standby gears of dep's web process that a wake
// can use: alive, with the environment the app has now. The others are
// removed.
func (a *Agent) standbys(app *store.App, dep *store.Deployment, proc string, n int) []string {
	if proc != "" || n == 0 || !a.rt.Caps().Isolated {
		return nil // (only namespaced gears stand by)
	}
	gears, err := a.gears(app.ID)
	if err != nil {
		return nil
	}
	var ok []string
	for _, g := range gears {
		if g.State != store.GearStandby {
			continue
		}
		if len(ok) < n && g.Deployment == dep.ID && !a.remote(g) && a.usable(app, dep, &g) {
			ok = append(ok, g.ID)
			continue
		}
		a.discard(g)
	}
	return ok
}

// usable reports whether a standby gear's supervisor is alive and the
// gear was made with the environment its app would get now (not before
// a change of the app's variables that did not roll out, say).
func (a *Agent) usable(app *store.App, dep *store.Deployment, g *store.Gear) bool {
	if st, err := a.rt.State(g.ID); err != nil || !st.Alive {
		return false
	}
	data, err := os.ReadFile(filepath.Join(a.o.Layout.Gear(g.ID), shim.SpecFile))
	if err != nil {
		return false
	}
	var spec shim.Spec
	return json.Unmarshal(data, &spec) == nil && slices.Equal(spec.Env, a.o.Env(app, dep, g))
}

// wake gives a claimed standby gear its address: its app starts.
func (a *Agent) wake(g *store.Gear) error {
	if gate, ok := a.driverFor(*g).(gearrt.Gate); ok && gate.Gated(g.ID) {
		return gate.Connect(g.ID)
	}
	return a.netAdd(g.ID) // made before this server started
}

// discard stops a standby gear and removes it.
func (a *Agent) discard(g store.Gear) {
	g.State = store.GearStandby // its app never ran: no stop hooks
	a.stopGear(context.Background(), g, io.Discard)
	a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
	if err := a.netRemove(g.ID); err != nil {
		a.log.Warn("removing a standby gear's network", "gear", g.ID, "err", fmt.Sprint(err))
	}
}
