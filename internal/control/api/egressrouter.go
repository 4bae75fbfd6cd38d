package api

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
)

// EgressRouter is what the API asks of the egress router.
type EgressRouter interface {
	// Sync applies the store's configuration to the router now.
	Sync()
	Gateway() netip.Addr
	ProxyAddr() netip.AddrPort
	RedirectPorts() []uint16
	PortError(port int) error
	Healthy(target string) bool
	// Forbidden says the router never dials this address.
	Forbidden(addr netip.Addr) bool
}

func (a *API) egressRouterView(app *store.App) *apitypes.EgressRouterView {
	v := &apitypes.EgressRouterView{Available: a.o.EgressRouter != nil, Redirects: []apitypes.EgressRedirectView{}, TCP: []apitypes.EgressTCPView{}}
	r := app.EgressRouter
	if r.Empty() {
		return v
	}
	v.Bound = v.Available
	var gw netip.Addr
	var redirectPorts []uint16
	if er := a.o.EgressRouter; er != nil {
		gw, redirectPorts = er.Gateway(), er.RedirectPorts()
		v.Address = gw.String()
		if r.Proxy {
			v.Proxy = &apitypes.EgressProxyView{URL: "http://" + er.ProxyAddr().String(), ACL: r.ACL}
		}
	}
	for i, rd := range r.Redirects {
		rv := apitypes.EgressRedirectView{N: i + 1, Match: rd.Match, Target: rd.Target}
		if i < len(redirectPorts) {
			rv.Port = int(redirectPorts[i])
		}
		v.Redirects = append(v.Redirects, rv)
	}
	for _, t := range r.TCP {
		tv := apitypes.EgressTCPView{Port: t.Port, Address: netip.AddrPortFrom(gw, uint16(t.Port)).String()}
		for _, dst := range t.Targets {
			tv.Targets = append(tv.Targets, apitypes.EgressTCPTargetView{Target: dst, Healthy: a.o.EgressRouter != nil && a.o.EgressRouter.Healthy(dst)})
		}
		if a.o.EgressRouter != nil {
			if err := a.o.EgressRouter.PortError(t.Port); err != nil {
				tv.Error = err.Error()
			}
		}
		v.TCP = append(v.TCP, tv)
	}
	return v
}

// checkTarget refuses a target the router would never dial.
func (a *API) checkTarget(text string) (string, error) {
	t, err := policy.ParseTarget(text)
	if err != nil {
		return "", invalid(err.Error())
	}
	host, _, _ := net.SplitHostPort(t)
	if ip, err := netip.ParseAddr(host); err == nil && a.o.EgressRouter.Forbidden(ip.Unmap()) {
		return "", invalid(fmt.Sprintf("target %s is on one of the platform's own networks (loopback, the gears' subnet, this machine): the egress router does not go there", t))
	}
	return t, nil
}

func (a *API) registerEgressRouter() {
	huma.Register(a.h, huma.Operation{OperationID: "show-egress-router", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/egress/router", Security: bearer,
		Summary: "How an app uses the egress router", Tags: []string{"egress"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.EgressRouterView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			return &body[apitypes.EgressRouterView]{Body: *a.egressRouterView(app)}, nil
		})

	type proxyIn struct {
		AppRef
		Body apitypes.EgressProxyRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-egress-proxy", Method: http.MethodPut, Path: "/v1/domains/{domain}/apps/{app}/egress/router/proxy", Security: bearer,
		Summary: "Send an app's outbound HTTP through the egress router's proxy", Description: "Binds the app to the egress router (its gears may leave only through it), sets HTTP_PROXY and HTTPS_PROXY in its gears (a running app restarts without downtime) and replaces the proxy's ACL.", Tags: []string{"egress"}},
		func(ctx context.Context, in *proxyIn) (*body[apitypes.EgressRouterView], error) {
			var acl []string
			for _, s := range in.Body.ACL {
				e, err := policy.ParseACL(s)
				if err != nil {
					return nil, invalid(err.Error())
				}
				acl = append(acl, e.Text)
			}
			return a.changeEgressRouter(ctx, in.AppRef, "proxy ACL "+strings.Join(acl, " "), func(r *store.EgressRouter) (bool, error) {
				restart := !r.Proxy
				r.Proxy, r.ACL = true, acl
				return restart, nil
			})
		})
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-proxy", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/proxy", Security: bearer,
		Summary: "Stop using the egress router's HTTP proxy", Tags: []string{"egress"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.EgressRouterView], error) {
			return a.changeEgressRouter(ctx, *in, "proxy off", func(r *store.EgressRouter) (bool, error) {
				if !r.Proxy {
					return false, notFound("not_found", "the app does not use the HTTP proxy")
				}
				r.Proxy, r.ACL = false, nil
				return true, nil
			})
		})

	type redirectIn struct {
		AppRef
		Body apitypes.EgressRedirectRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-egress-redirect", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/egress/router/redirects", Security: bearer,
		Summary: "Redirect an app's connections to a destination through the egress router to a fixed target", Description: "Binds the app to the egress router. Applied to running gears at once.", Tags: []string{"egress"}},
		func(ctx context.Context, in *redirectIn) (*body[apitypes.EgressRouterView], error) {
			m, err := policy.ParseRedirect(in.Body.Match)
			if err != nil {
				return nil, invalid(err.Error())
			}
			if a.o.EgressRouter == nil {
				return nil, a.noEgressRouter()
			}
			target, err := a.checkTarget(in.Body.Target)
			if err != nil {
				return nil, err
			}
			max := len(a.o.EgressRouter.RedirectPorts())
			return a.changeEgressRouter(ctx, in.AppRef, "redirect "+m.Text+" to "+target, func(r *store.EgressRouter) (bool, error) {
				for _, rd := range r.Redirects {
					if rd.Match == m.Text {
						return false, problem(http.StatusConflict, apitypes.CodeConflict, fmt.Sprintf("%s is already redirected to %s: remove that redirect first", m.Text, rd.Target))
					}
				}
				if len(r.Redirects) >= max {
					return false, invalid(fmt.Sprintf("an app has at most %d redirects", max))
				}
				restart := !wasBound(r)
				r.Redirects = append(r.Redirects, store.EgressRedirect{Match: m.Text, Target: target})
				return restart, nil
			})
		})
	type redirectRef struct {
		AppRef
		N int `path:"n" doc:"redirect number, from 1"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-redirect", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/redirects/{n}", Security: bearer,
		Summary: "Remove a redirect", Tags: []string{"egress"}},
		func(ctx context.Context, in *redirectRef) (*body[apitypes.EgressRouterView], error) {
			return a.changeEgressRouter(ctx, in.AppRef, fmt.Sprintf("redirect %d removed", in.N), func(r *store.EgressRouter) (bool, error) {
				if in.N < 1 || in.N > len(r.Redirects) {
					return false, notFound("not_found", fmt.Sprintf("the app has no redirect %d: see `gantry egress router %s`", in.N, in.App))
				}
				r.Redirects = slices.Delete(r.Redirects, in.N-1, in.N)
				return r.Empty(), nil
			})
		})

	type tcpIn struct {
		AppRef
		Port int `path:"port" minimum:"1024" maximum:"65535"`
		Body apitypes.EgressTCPRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-egress-tcp", Method: http.MethodPut, Path: "/v1/domains/{domain}/apps/{app}/egress/router/tcp/{port}", Security: bearer,
		Summary: "A TCP proxy on the egress router", Description: "The router listens on PORT at GANTRY_EGRESS_ROUTER for the app's gears and forwards to the targets (health-checked, round-robin). Binds the app to the egress router.", Tags: []string{"egress"}},
		func(ctx context.Context, in *tcpIn) (*body[apitypes.EgressRouterView], error) {
			if a.o.EgressRouter == nil {
				return nil, a.noEgressRouter()
			}
			er := a.o.EgressRouter
			if slices.Contains(a.o.ReservedPorts, in.Port) || in.Port == int(er.ProxyAddr().Port()) || slices.Contains(er.RedirectPorts(), uint16(in.Port)) {
				return nil, invalid(fmt.Sprintf("port %d is one of the platform's own; choose another", in.Port))
			}
			var targets []string
			for _, t := range in.Body.Targets {
				tt, err := a.checkTarget(t)
				if err != nil {
					return nil, err
				}
				targets = append(targets, tt)
			}
			// A port no app uses yet must be free on the gateway.
			inUse := false
			a.o.Store.View(func(tx *store.Tx) error {
				apps, _ := store.ListApps(tx)
				for _, o := range apps {
					if o.EgressRouter != nil && slices.ContainsFunc(o.EgressRouter.TCP, func(t store.EgressTCP) bool { return t.Port == in.Port }) {
						inUse = true
					}
				}
				return nil
			})
			if !inUse {
				ln, err := net.Listen("tcp", netip.AddrPortFrom(er.Gateway(), uint16(in.Port)).String())
				if err != nil {
					return nil, problem(http.StatusConflict, apitypes.CodeConflict, fmt.Sprintf("port %d is in use on the gateway %s: choose another", in.Port, er.Gateway()))
				}
				ln.Close()
			}
			return a.changeEgressRouter(ctx, in.AppRef, fmt.Sprintf("TCP proxy %d to %s", in.Port, strings.Join(targets, " ")), func(r *store.EgressRouter) (bool, error) {
				restart := !wasBound(r)
				for i := range r.TCP {
					if r.TCP[i].Port == in.Port {
						r.TCP[i].Targets = targets
						return restart, nil
					}
				}
				r.TCP = append(r.TCP, store.EgressTCP{Port: in.Port, Targets: targets})
				return restart, nil
			})
		})
	type tcpRef struct {
		AppRef
		Port int `path:"port"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-tcp", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/tcp/{port}", Security: bearer,
		Summary: "Remove a TCP proxy", Tags: []string{"egress"}},
		func(ctx context.Context, in *tcpRef) (*body[apitypes.EgressRouterView], error) {
			return a.changeEgressRouter(ctx, in.AppRef, fmt.Sprintf("TCP proxy %d removed", in.Port), func(r *store.EgressRouter) (bool, error) {
				i := slices.IndexFunc(r.TCP, func(t store.EgressTCP) bool { return t.Port == in.Port })
				if i < 0 {
					return false, notFound("not_found", fmt.Sprintf("the app has no TCP proxy on port %d", in.Port))
				}
				r.TCP = slices.Delete(r.TCP, i, i+1)
				return r.Empty(), nil
			})
		})
}

// wasBound says, of a configuration before a change, that the app was
// bound already (otherwise binding it changes its environment).
func wasBound(r *store.EgressRouter) bool { return !r.Empty() }

func (a *API) noEgressRouter() error {
	return problem(http.StatusConflict, apitypes.CodeConflict, "there is no egress router: it needs isolated gears (run `gantry server` as root on Linux)")
}

// changeEgressRouter applies change to the app's egress router
// configuration (all or nothing), then to the host's firewall, the
// router and the gears' rulesets; a change of the gears' environment
// (restart) rolls the app out.
func (a *API) changeEgressRouter(ctx context.Context, ref AppRef, what string, change func(r *store.EgressRouter) (restart bool, err error)) (*body[apitypes.EgressRouterView], error) {
	if a.o.EgressRouter == nil {
		return nil, a.noEgressRouter()
	}
	app, err := a.loadApp(ctx, ref)
	if err != nil {
		return nil, err
	}
	var restart bool
	err = a.o.Store.Update(func(tx *store.Tx) error {
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
		return nil, asProblem(a, "saving the egress router configuration", err)
	}
	a.log.Info("egress router changed", "app", app.FullName(), "change", what, "user", userOf(ctx).Name)
	if err := a.o.EgressPorts(); err != nil {
		return nil, a.internal("opening the egress router's ports", err)
	}
	a.o.EgressRouter.Sync()
	if err := a.o.Egress.Apply(app.Key()); err != nil {
		return nil, a.internal("applying egress policy", err)
	}
	if restart && app.ActiveDeployment != "" && !app.Stopped {
		var out bytes.Buffer
		if err := a.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, &out); err != nil {
			return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, "saved, but the app did not restart with the egress router's environment: "+err.Error())
		}
		a.o.EgressRouter.Sync() // the new gears' addresses
	}
	return &body[apitypes.EgressRouterView]{Body: *a.egressRouterView(app)}, nil
}
