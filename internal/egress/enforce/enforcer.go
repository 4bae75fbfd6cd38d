package enforce

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// namespaces is a gear's isolation when it has a network namespace of its
// own (agent.Namespaces): only those gears are enforced.
const namespaces = "namespaces"

// Options configure an Enforcer.
type Options struct {
	Store *store.Store
	Log   *slog.Logger
	// Enabled: gears are namespaced, so policies are enforced.
	Enabled bool
	// Network names the gears' namespaces and gives the gateway.
	Network netplan.Plan
	// Node is this machine's name in a cluster: policies are loaded into
	// its own gears, and let them reach their app's gears everywhere.
	Node string
	// Default is the platform's verdict when no rule of an app matches
	// (allow unless set); Labels the port labels (policy.DefaultLabels
	// unless set).
	Default string
	Labels  policy.Labels
	// Scan is when refusals look like a port scan (policy.DefaultScan
	// unless set); ScanBlock cuts a flagged app's outbound traffic.
	Scan      policy.ScanPolicy
	ScanBlock bool
	// OnEvent is told of port scans (kind port_scan); OnRefused of
	// refused destinations (for metrics).
	OnEvent   func(app *store.App, kind, reason string)
	OnRefused func(app *store.App, destinations int)
	// Router is where the egress router listens on the gateway (nil: no
	// router); a bound app's gears may leave only for it.
	Router *RouterPorts
	// DNS is the platform's DNS forwarder on the gateway (invalid: none).
	// Apps with hostname rules send their DNS there, and what their
	// lookups return is let through (LearnDNS).
	DNS netip.AddrPort
	// DNSUpstreams resolve hostname rules, with their TTLs (the
	// forwarder's upstreams; none: Go's resolver, refreshed every 30 s).
	DNSUpstreams []string
}

// Enforcer applies outbound policies.
type Enforcer struct {
	o   Options
	log *slog.Logger

	hosts   hostCache    // addresses of egress hostname rules
	learned learnedCache // addresses the gears' lookups returned
	byAddr  gearIndex    // namespaced gears by address (DNS learning)
}

// New validates the options.
func New(o Options) (*Enforcer, error) {
	if o.Store == nil {
		return nil, errors.New("enforce: Store is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Enforcer{o: o, log: o.Log.With("component", "egress")}, nil
}

// Run refreshes hostname rules and watches for port scans until ctx ends.
func (e *Enforcer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.refreshLoop(ctx) }()
	go func() { defer wg.Done(); e.scanLoop(ctx) }()
	wg.Wait()
	return nil
}

// namespacedGears reads an app and its namespaced gears (cartridges
// included).
func (e *Enforcer) namespacedGears(appKey string) (store.App, []store.Gear, error) {
	app, gears, err := e.appGears(appKey)
	var local []store.Gear
	for _, g := range gears {
		if e.o.Node == "" || g.Node == "" || g.Node == e.o.Node {
			local = append(local, g)
		}
	}
	return app, local, err
}

// appGears reads an app and its namespaced gears on every machine.
func (e *Enforcer) appGears(appKey string) (store.App, []store.Gear, error) {
	var app store.App
	var gears []store.Gear
	err := e.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.AppKey == appKey && g.Isolation == namespaces {
				gears = append(gears, g)
			}
		}
		return err
	})
	return app, gears, err
}
