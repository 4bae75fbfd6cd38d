package service

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
)

// EgressRouter is what the service asks of the egress router.
type EgressRouter interface {
	// Sync applies the store's configuration to the router now.
	Sync()
	Gateway() netip.Addr
	ProxyAddr() netip.AddrPort
	RedirectPorts() []uint16
	// Forbidden says the router never dials this address.
	Forbidden(addr netip.Addr) bool
}

func (s *Service) noEgressRouter() error {
	return refuse(Conflict, apitypes.CodeConflict, "there is no egress router: it needs isolated gears (run `gantry server` as root on Linux)")
}

// checkTarget refuses a target the router would never dial.
func (s *Service) checkTarget(text string) (string, error) {
	t, err := policy.ParseTarget(text)
	if err != nil {
		return "", refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	host, _, _ := net.SplitHostPort(t)
	if ip, err := netip.ParseAddr(host); err == nil && s.o.EgressRouter.Forbidden(ip.Unmap()) {
		return "", refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("target %s is on one of the platform's own networks (loopback, the gears' subnet, this machine): the egress router does not go there", t))
	}
	return t, nil
}

// SetEgressProxy binds the app to the egress router's HTTP proxy with
// the ACL (replacing the previous one); its gears get HTTP_PROXY.
func (s *Service) SetEgressProxy(ctx context.Context, caller *store.User, domain, name string, entries []string) (*store.App, error) {
	var acl []string
	for _, e := range entries {
		p, err := policy.ParseACL(e)
		if err != nil {
			return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
		}
		acl = append(acl, p.Text)
	}
	return s.changeEgressRouter(ctx, caller, domain, name, "proxy ACL "+strings.Join(acl, " "), func(r *store.EgressRouter) (bool, error) {
		restart := !r.Proxy
		r.Proxy, r.ACL = true, acl
		return restart, nil
	})
}

// RemoveEgressProxy stops the app's use of the HTTP proxy.
func (s *Service) RemoveEgressProxy(ctx context.Context, caller *store.User, domain, name string) (*store.App, error) {
	return s.changeEgressRouter(ctx, caller, domain, name, "proxy off", func(r *store.EgressRouter) (bool, error) {
		if !r.Proxy {
			return false, refuse(NotFound, "not_found", "the app does not use the HTTP proxy")
		}
		r.Proxy, r.ACL = false, nil
		return true, nil
	})
}

// AddEgressRedirect sends the app's connections to match through the
// egress router to target.
func (s *Service) AddEgressRedirect(ctx context.Context, caller *store.User, domain, name, match, target string) (*store.App, error) {
	m, err := policy.ParseRedirect(match)
	if err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if s.o.EgressRouter == nil {
		return nil, s.noEgressRouter()
	}
	t, err := s.checkTarget(target)
	if err != nil {
		return nil, err
	}
	most := len(s.o.EgressRouter.RedirectPorts())
	return s.changeEgressRouter(ctx, caller, domain, name, "redirect "+m.Text+" to "+t, func(r *store.EgressRouter) (bool, error) {
		for _, rd := range r.Redirects {
			if rd.Match == m.Text {
				return false, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("%s is already redirected to %s: remove that redirect first", m.Text, rd.Target))
			}
		}
		if len(r.Redirects) >= most {
			return false, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("an app has at most %d redirects", most))
		}
		restart := !wasBound(r)
		r.Redirects = append(r.Redirects, store.EgressRedirect{Match: m.Text, Target: t})
		return restart, nil
	})
}

// RemoveEgressRedirect removes redirect n (from 1).
func (s *Service) RemoveEgressRedirect(ctx context.Context, caller *store.User, domain, name string, n int) (*store.App, error) {
	return s.changeEgressRouter(ctx, caller, domain, name, fmt.Sprintf("redirect %d removed", n), func(r *store.EgressRouter) (bool, error) {
		if n < 1 || n > len(r.Redirects) {
			return false, refuse(NotFound, "not_found", fmt.Sprintf("the app has no redirect %d: see `gantry egress router %s`", n, name))
		}
		r.Redirects = slices.Delete(r.Redirects, n-1, n)
		return r.Empty(), nil
	})
}

// SetEgressTCP makes the egress router listen on port for the app's gears
// and forward to targets (health-checked, round-robin).
func (s *Service) SetEgressTCP(ctx context.Context, caller *store.User, domain, name string, port int, targetTexts []string) (*store.App, error) {
	if s.o.EgressRouter == nil {
		return nil, s.noEgressRouter()
	}
	er := s.o.EgressRouter
	if slices.Contains(s.o.ReservedPorts, port) || port == int(er.ProxyAddr().Port()) || slices.Contains(er.RedirectPorts(), uint16(port)) {
		return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("port %d is one of the platform's own; choose another", port))
	}
	var targets []string
	for _, t := range targetTexts {
		tt, err := s.checkTarget(t)
		if err != nil {
			return nil, err
		}
		targets = append(targets, tt)
	}
	// A port no app uses yet must be free on the gateway.
	inUse := false
	s.st.View(func(tx *store.Tx) error {
		apps, _ := store.ListApps(tx)
		for _, o := range apps {
			if o.EgressRouter != nil && slices.ContainsFunc(o.EgressRouter.TCP, func(t store.EgressTCP) bool { return t.Port == port }) {
				inUse = true
			}
		}
		return nil
	})
	if !inUse {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(er.Gateway(), uint16(port)).String())
		if err != nil {
			return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("port %d is in use on the gateway %s: choose another", port, er.Gateway()))
		}
		ln.Close()
	}
	return s.changeEgressRouter(ctx, caller, domain, name, fmt.Sprintf("TCP proxy %d to %s", port, strings.Join(targets, " ")), func(r *store.EgressRouter) (bool, error) {
		restart := !wasBound(r)
		for i := range r.TCP {
			if r.TCP[i].Port == port {
				r.TCP[i].Targets = targets
				return restart, nil
			}
		}
		r.TCP = append(r.TCP, store.EgressTCP{Port: port, Targets: targets})
		return restart, nil
	})
}

// RemoveEgressTCP removes the app's TCP proxy on port.
func (s *Service) RemoveEgressTCP(ctx context.Context, caller *store.User, domain, name string, port int) (*store.App, error) {
	return s.changeEgressRouter(ctx, caller, domain, name, fmt.Sprintf("TCP proxy %d removed", port), func(r *store.EgressRouter) (bool, error) {
		i := slices.IndexFunc(r.TCP, func(t store.EgressTCP) bool { return t.Port == port })
		if i < 0 {
			return false, refuse(NotFound, "not_found", fmt.Sprintf("the app has no TCP proxy on port %d", port))
		}
		r.TCP = slices.Delete(r.TCP, i, i+1)
		return r.Empty(), nil
	})
}

// wasBound says, of a configuration before a change, that the app was
// bound already (otherwise binding it changes its environment).
func wasBound(r *store.EgressRouter) bool { return !r.Empty() }

// changeEgressRouter applies change to the app's egress router
// configuration (all or nothing), then to the host's firewall, the
// router and the gears' rulesets; a change of the gears' environment
// (restart) rolls the app out.
func (s *Service) changeEgressRouter(ctx context.Context, caller *store.User, domain, name, what string, change func(r *store.EgressRouter) (restart bool, err error)) (*store.App, error) {
	if s.o.EgressRouter == nil {
		return nil, s.noEgressRouter()
	}
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	var restart bool
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		r := &store.EgressRouter{}
		if app.EgressRouter != nil {
			c := *app.EgressRouter
			c.ACL = slices.Clone(c.ACL)
			c.Redirects = slices.Clone(c.Redirects)
			c.TCP = slices.Clone(c.TCP)
			r = &c
		}
		var err error
		if restart, err = change(r); err != nil {
			return err
		}
		app.EgressRouter = r
		if r.Empty() {
			app.EgressRouter = nil
		}
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("egress router changed", "app", app.FullName(), "change", what, "user", caller.Name)
	if s.o.EgressPorts != nil {
		if err := s.o.EgressPorts(); err != nil {
			return nil, fmt.Errorf("opening the egress router's ports: %w", err)
		}
	}
	s.o.EgressRouter.Sync()
	if err := s.o.Egress.Apply(app.Key()); err != nil {
		return nil, fmt.Errorf("applying egress policy: %w", err)
	}
	if restart && app.ActiveDeployment != "" && !app.Stopped {
		var out bytes.Buffer
		if err := s.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "saved, but the app did not restart with the egress router's environment: "+err.Error())
		}
		s.o.EgressRouter.Sync() // the new gears' addresses
	}
	return app, nil
}
