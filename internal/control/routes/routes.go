// Package routes hands the router its configuration: it follows the
// store's changes and gives the router (edge/router) the apps, routed gears,
// aliases, certificates and TCP routes of each revision. It is the only
// place the edge learns of the store; it decides nothing the router does
// not (the route table itself is compiled by router.Compile).
package routes

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/router"
)

// Target receives each revision's state (the router).
type Target interface {
	Set(rev int64, s router.State)
}

// Publisher follows the store and sets the target's routes.
type Publisher struct {
	st  *store.Store
	to  Target
	log *slog.Logger

	// In a cluster, gears of machines that are not up are left out: the
	// set of machines up is read at each sync and every half second.
	cluster bool
	// noApps: the router serves the platform only (a machine without the
	// edge role).
	noApps bool
	mu     sync.Mutex
	live   map[string]bool
}

// FollowMachines leaves out the gears of machines that are down (a
// cluster), as soon as their presence lapses.
func (p *Publisher) FollowMachines() { p.cluster = true }

// New returns a publisher from st to the router.
func New(st *store.Store, to Target, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{st: st, to: to, log: log.With("component", "routes")}
}

// Sync reads the store once and sets the target's routes.
func (p *Publisher) Sync() error {
	var s router.State
	var rev int64
	live, _ := p.liveNow()
	err := p.st.View(func(tx *store.Tx) error {
		rev = p.st.Rev()
		var err error
		s, err = read(tx, live)
		return err
	})
	if err != nil {
		return err
	}
	if p.noApps {
		s = router.State{}
	}
	p.to.Set(rev, s)
	return nil
}

// ServeNoApps makes the router serve the platform only (no app routes),
// on a machine without the edge role.
func (p *Publisher) ServeNoApps() { p.noApps = true }

// liveNow reads the machines up (nil: not a cluster); when the store
// cannot tell, the last answer stands, so routers keep serving.
func (p *Publisher) liveNow() (live map[string]bool, changed bool) {
	if !p.cluster {
		return nil, false
	}
	l, err := p.st.Live()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		return p.live, false
	}
	changed = !maps.Equal(l, p.live)
	p.live = l
	return l, changed
}

// Run sets the routes now and after every change of the store, until ctx
// ends.
func (p *Publisher) Run(ctx context.Context) error {
	watch := p.st.Watch(ctx)
	if err := p.Sync(); err != nil {
		return err
	}
	var tick <-chan time.Time
	if p.cluster {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick:
			if _, changed := p.liveNow(); !changed {
				continue
			}
		}
		if err := p.Sync(); err != nil {
			p.log.Error("reloading routes", "err", err)
		}
	}
}

// Read gathers the router's state from the store.
func Read(tx *store.Tx) (router.State, error) { return read(tx, nil) }

// read gathers the router's state, with only the gears of machines in
// live (nil: all).
func read(tx *store.Tx, live map[string]bool) (router.State, error) {
	apps, err := store.ListApps(tx)
	if err != nil {
		return router.State{}, err
	}
	gears, err := store.ListGears(tx)
	if err != nil {
		return router.State{}, err
	}
	if live != nil {
		up := gears[:0]
		for _, g := range gears {
			if g.Node == "" || live[g.Node] {
				up = append(up, g)
			}
		}
		gears = up
	}
	aliases, err := store.ListAliases(tx)
	if err != nil {
		return router.State{}, err
	}
	certs, err := store.ListCerts(tx)
	if err != nil {
		return router.State{}, err
	}
	tcp, err := store.ListTCPRoutes(tx)
	if err != nil {
		return router.State{}, err
	}
	return State(apps, gears, aliases, certs, tcp), nil
}

// State maps store records to the router's state: only running web gears
// (not cartridges) take requests.
func State(apps []store.App, gears []store.Gear, aliases []store.Alias, certs []store.Cert, tcp []store.TCPRoute) router.State {
	var s router.State
	for _, a := range apps {
		s.Apps = append(s.Apps, router.App{Key: a.Key(), Name: a.FullName(), Host: a.Host, Stopped: a.Stopped, Idle: a.Idle,
			HTTPS: a.HTTPS, ConnectTimeout: a.ConnectTimeout, ReadTimeout: a.ReadTimeout, TunnelTimeout: a.TunnelTimeout})
	}
	for _, g := range gears {
		if g.State != store.GearRunning || !g.Web() {
			continue
		}
		s.Gears = append(s.Gears, router.Gear{AppKey: g.AppKey, IP: g.IP, Port: g.Port})
	}
	for _, al := range aliases {
		s.Aliases = append(s.Aliases, router.Alias{Host: al.Host, AppKey: al.AppKey})
	}
	for _, c := range certs {
		s.Certs = append(s.Certs, router.Cert{Host: c.Host, CertPEM: c.CertPEM, KeyPEM: c.KeyPEM})
	}
	for _, t := range tcp {
		s.TCPRoutes = append(s.TCPRoutes, router.TCPSpec{Port: t.Port, SNI: t.SNI, AppKey: t.AppKey, TargetPort: t.TargetPort})
	}
	return s
}
