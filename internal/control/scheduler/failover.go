package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Failover watches the machines' presence and, when one has been down for
// the grace time, moves its web gears to the others: their records go
// (the routers dropped them already, when its presence lapsed) and each
// app is scaled back to its gear count, which places new gears on the
// machines up. Cartridges stay: their data is on that machine. The
// machine, when it comes back, stops the gears it finds without a record.
// Only the leader acts (Store.Lead), so no gear is moved twice.
type Failover struct {
	Store *store.Store
	// Self names this machine in the election.
	Self string
	// Grace is how long a machine may be down before its gears move.
	Grace time.Duration
	// Scale brings an app back to n web gears (the agent's ScaleTo).
	Scale func(ctx context.Context, appKey string, n int) error
	// Moved, if set, is told of each app whose gears moved (events).
	Moved func(app *store.App, node string, n int, since time.Time)
	Log   *slog.Logger
	// Every is how often presence is checked (1s).
	Every time.Duration
}

// Run acts while this machine leads, until ctx ends.
func (f *Failover) Run(ctx context.Context) error {
	if f.Every == 0 {
		f.Every = time.Second
	}
	if f.Log == nil {
		f.Log = slog.Default()
	}
	log := f.Log.With("component", "scheduler")
	return f.Store.Lead(ctx, "scheduler", f.Self, 5*time.Second, func(ctx context.Context) {
		log.Info("this machine leads the scheduler")
		down := map[string]time.Time{} // since when each machine is down
		short := map[string]int{}      // apps seen short of gears, how many checks in a row
		t := time.NewTicker(f.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				log.Info("this machine no longer leads the scheduler")
				return
			case <-t.C:
			}
			f.check(ctx, down, log)
			f.reconcile(ctx, short, log)
		}
	})
}

func (f *Failover) check(ctx context.Context, down map[string]time.Time, log *slog.Logger) {
	live, err := f.Store.Live()
	if err != nil {
		return // the store is away: nothing can be judged
	}
	var nodes []store.Node
	if f.Store.View(func(tx *store.Tx) error {
		var err error
		nodes, err = store.ListNodes(tx)
		return err
	}) != nil {
		return
	}
	now := time.Now()
	for _, n := range nodes {
		if live[n.Name] {
			if !down[n.Name].IsZero() || !n.DownSince.IsZero() {
				log.Info("machine is up again", "node", n.Name)
				f.markDown(n.Name, time.Time{})
			}
			delete(down, n.Name)
			continue
		}
		// The grace counts from the first sight by any leader (a change
		// of leader does not restart it).
		since := down[n.Name]
		if since.IsZero() {
			since = n.DownSince
			if since.IsZero() {
				since = now
				f.markDown(n.Name, now.UTC())
				log.Warn("machine is down", "node", n.Name, "grace", f.Grace)
			}
			down[n.Name] = since
		}
		if now.Sub(since) >= f.Grace {
			f.move(ctx, n.Name, since, log)
		}
	}
}

// reconcile brings back to their gear count the apps that run fewer web
// gears than it for three checks in a row with none starting: a change
// whose machine died half-way (on one machine, the agent does it when the
// server starts again).
func (f *Failover) reconcile(ctx context.Context, short map[string]int, log *slog.Logger) {
	var apps []store.App
	var gears []store.Gear
	deps := map[string]store.Deployment{}
	if f.Store.View(func(tx *store.Tx) error {
		var err error
		if apps, err = store.ListApps(tx); err != nil {
			return err
		}
		for _, a := range apps {
			var d store.Deployment
			if a.ActiveDeployment != "" && !a.Stopped && tx.Get(store.DeploymentKey(a.ID, a.ActiveDeployment), &d) == nil {
				deps[a.Key()] = d
			}
		}
		gears, err = store.ListGears(tx)
		return err
	}) != nil {
		return
	}
	starting := map[string]bool{}
	for _, g := range gears {
		if g.State == store.GearStarting {
			starting[g.AppKey] = true
		}
	}
	for _, a := range apps {
		key := a.Key()
		dep, ok := deps[key]
		if !ok || starting[key] || !store.Short(&a, &dep, gears) {
			delete(short, key)
			continue
		}
		if short[key]++; short[key] < 3 {
			continue
		}
		delete(short, key)
		log.Info("restoring the app's gear count after an interrupted change", "app", a.FullName(), "scale", a.Scale, "formation", a.Formation)
		if err := f.Scale(ctx, key, a.Scale); err != nil {
			log.Error("restoring the app's gear count", "app", a.FullName(), "err", err)
		}
	}
}

func (f *Failover) markDown(node string, since time.Time) {
	f.Store.Update(func(tx *store.Tx) error {
		var n store.Node
		if err := tx.Get(store.NodeKey(node), &n); err != nil {
			return err
		}
		n.DownSince = since
		return tx.Put(store.NodeKey(node), &n)
	})
}

// move takes the web gears off a lost machine and scales their apps back.
func (f *Failover) move(ctx context.Context, node string, since time.Time, log *slog.Logger) {
	moved := map[string]int{}
	apps := map[string]store.App{}
	err := f.Store.Update(func(tx *store.Tx) error {
		clear(moved) // a transaction may run again (etcd)
		clear(apps)
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if g.Node != node || g.Service != "" {
				continue
			}
			if err := tx.Delete(store.GearKey(g.ID)); err != nil {
				return err
			}
			if g.State == store.GearRunning && g.Web() {
				moved[g.AppKey]++
			}
			if _, ok := apps[g.AppKey]; !ok {
				var a store.App
				if tx.Get(g.AppKey, &a) == nil {
					apps[g.AppKey] = a
				}
			}
		}
		return nil
	})
	if err != nil || len(apps) == 0 {
		return
	}
	keys := make([]string, 0, len(apps))
	for k := range apps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		app := apps[k]
		log.Warn("moving the gears of a lost machine", "node", node, "app", app.FullName(), "gears", moved[k], "down_since", since.Format(time.RFC3339))
		if f.Moved != nil && moved[k] > 0 {
			f.Moved(&app, node, moved[k], since)
		}
		if app.Stopped || app.ActiveDeployment == "" || (app.Idle || app.Scale <= 0) && len(app.Formation) == 0 {
			continue
		}
		if err := f.Scale(ctx, k, app.Scale); err != nil {
			log.Error("starting the gears of a lost machine elsewhere", "app", app.FullName(), "err", err)
		}
	}
}

// Describe says where a cartridge is when its machine is down:
// "postgresql on m2: node unreachable since 12:03".
func Describe(service string, n store.Node) string {
	if n.DownSince.IsZero() {
		return fmt.Sprintf("%s on %s: node unreachable", service, n.Name)
	}
	return fmt.Sprintf("%s on %s: node unreachable since %s", service, n.Name, n.DownSince.Local().Format("15:04"))
}
