package server

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/gantry-paas/gantry/internal/control/api"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
	egressrouter "github.com/gantry-paas/gantry/internal/egress/router"
)

// egressRole runs the egress router on the gear network's gateway and
// keeps its configuration equal to the store's: which gear addresses
// belong to which bound app, and what each app may do through it.
type egressRole struct {
	r      *egressrouter.Router
	st     *store.Store
	log    *slog.Logger
	subnet netip.Prefix
}

// forbiddenNets are the networks the egress router never dials: the
// gears' subnet, loopback, link-local (cloud metadata services),
// multicast, and the machine's own addresses.
func forbiddenNets(subnet netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{subnet.Masked()}
	for _, s := range []string{"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "::/128", "::1/128", "fe80::/10", "ff00::/8"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					ip = ip.Unmap()
					out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
				}
			}
		}
	}
	return out
}

func (e *egressRole) Gateway() netip.Addr            { return e.r.Gateway() }
func (e *egressRole) ProxyAddr() netip.AddrPort      { return e.r.ProxyAddr() }
func (e *egressRole) RedirectPorts() []uint16        { return e.r.RedirectPorts() }
func (e *egressRole) PortError(port int) error       { return e.r.PortError(port) }
func (e *egressRole) Healthy(target string) bool     { return e.r.Healthy(target) }
func (e *egressRole) Forbidden(addr netip.Addr) bool { return e.r.Forbidden(addr) }

func (e *egressRole) Run(ctx context.Context) error {
	if err := e.r.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		followHostAddrs(ctx, e.log, func() { e.r.SetForbidden(forbiddenNets(e.subnet)) })
	}()
	e.Sync()
	for range e.st.Watch(ctx) {
		e.Sync()
	}
	wg.Wait()
	return nil
}

// Sync applies the store's configuration now.
func (e *egressRole) Sync() {
	var apps []store.App
	var gears []store.Gear
	err := e.st.View(func(tx *store.Tx) error {
		var err error
		if apps, err = store.ListApps(tx); err != nil {
			return err
		}
		gears, err = store.ListGears(tx)
		return err
	})
	if err != nil {
		e.log.Error("reading the egress router's configuration", "err", err)
		return
	}
	e.r.Apply(compileEgress(apps, gears, e.log))
}

// compileEgress is the router's view of the bound apps (pure).
func compileEgress(apps []store.App, gears []store.Gear, log *slog.Logger) []egressrouter.App {
	byApp := map[string][]netip.Addr{}
	for _, g := range gears {
		if g.State == store.GearStopped || g.State == store.GearDraining || g.IP == "" {
			continue
		}
		if ip, err := netip.ParseAddr(g.IP); err == nil {
			byApp[g.AppKey] = append(byApp[g.AppKey], ip)
		}
	}
	var out []egressrouter.App
	for _, a := range apps {
		r := a.EgressRouter
		if r.Empty() {
			continue
		}
		ea := egressrouter.App{Name: a.FullName(), Gears: byApp[a.Key()], Proxy: r.Proxy}
		for _, s := range r.ACL {
			e, err := policy.ParseACL(s)
			if err != nil {
				log.Warn("egress proxy ACL entry skipped", "app", a.FullName(), "err", err)
				continue
			}
			ea.ACL = append(ea.ACL, e)
		}
		for _, rd := range r.Redirects {
			ea.Redirects = append(ea.Redirects, egressrouter.Redirect{Match: rd.Match, Target: rd.Target})
		}
		for _, t := range r.TCP {
			ea.TCP = append(ea.TCP, egressrouter.TCPProxy{Port: t.Port, Targets: t.Targets})
		}
		out = append(out, ea)
	}
	return out
}

// egressAPI is the router for the API (a nil interface when there is none).
func egressAPI(e *egressRole) api.EgressRouter {
	if e == nil {
		return nil
	}
	return e
}

// followHostAddrs calls changed whenever an address is added to or removed
// from this machine's interfaces (netlink), until ctx ends, and at every
// (re)subscription: the egress router's forbidden networks follow the
// host's addresses, interfaces that come up after the start included.
func followHostAddrs(ctx context.Context, log *slog.Logger, changed func()) {
	for ctx.Err() == nil {
		followOnce(ctx, log, changed)
		select { // the subscription ended (a netlink error): again shortly
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func followOnce(ctx context.Context, log *slog.Logger, changed func()) {
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				log.Debug("following the host's addresses", "err", err)
			}
		},
	}); err != nil {
		log.Warn("cannot follow the host's addresses; the egress router knows those of its start only", "err", err)
		return
	}
	changed()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			// A burst of updates (an interface with several addresses)
			// costs one recomputation.
			for drained := false; !drained; {
				select {
				case <-updates:
				default:
					drained = true
				}
			}
			changed()
		}
	}
}
