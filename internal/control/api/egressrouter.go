package api

import (
	"context"
	"net/http"
	"net/netip"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
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
	answer := func(app *store.App, err error) (*body[apitypes.EgressRouterView], error) {
		if err != nil {
			return nil, asProblem(a, "changing the egress router configuration", err)
		}
		return &body[apitypes.EgressRouterView]{Body: *a.egressRouterView(app)}, nil
	}

	type proxyIn struct {
		AppRef
		Body apitypes.EgressProxyRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-egress-proxy", Method: http.MethodPut, Path: "/v1/domains/{domain}/apps/{app}/egress/router/proxy", Security: bearer,
		Summary: "Send an app's outbound HTTP through the egress router's proxy", Description: "Binds the app to the egress router (its gears may leave only through it), sets HTTP_PROXY and HTTPS_PROXY in its gears (a running app restarts without downtime) and replaces the proxy's ACL.", Tags: []string{"egress"}},
		func(ctx context.Context, in *proxyIn) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.SetEgressProxy(ctx, userOf(ctx), in.Domain, in.App, in.Body.ACL))
		})
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-proxy", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/proxy", Security: bearer,
		Summary: "Stop using the egress router's HTTP proxy", Tags: []string{"egress"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.RemoveEgressProxy(ctx, userOf(ctx), in.Domain, in.App))
		})

	type redirectIn struct {
		AppRef
		Body apitypes.EgressRedirectRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-egress-redirect", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/egress/router/redirects", Security: bearer,
		Summary: "Redirect an app's connections to a destination through the egress router to a fixed target", Description: "Binds the app to the egress router. Applied to running gears at once.", Tags: []string{"egress"}},
		func(ctx context.Context, in *redirectIn) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.AddEgressRedirect(ctx, userOf(ctx), in.Domain, in.App, in.Body.Match, in.Body.Target))
		})
	type redirectRef struct {
		AppRef
		N int `path:"n" doc:"redirect number, from 1"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-redirect", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/redirects/{n}", Security: bearer,
		Summary: "Remove a redirect", Tags: []string{"egress"}},
		func(ctx context.Context, in *redirectRef) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.RemoveEgressRedirect(ctx, userOf(ctx), in.Domain, in.App, in.N))
		})

	type tcpIn struct {
		AppRef
		Port int `path:"port" minimum:"1024" maximum:"65535"`
		Body apitypes.EgressTCPRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-egress-tcp", Method: http.MethodPut, Path: "/v1/domains/{domain}/apps/{app}/egress/router/tcp/{port}", Security: bearer,
		Summary: "A TCP proxy on the egress router", Description: "The router listens on PORT at GANTRY_EGRESS_ROUTER for the app's gears and forwards to the targets (health-checked, round-robin). Binds the app to the egress router.", Tags: []string{"egress"}},
		func(ctx context.Context, in *tcpIn) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.SetEgressTCP(ctx, userOf(ctx), in.Domain, in.App, in.Port, in.Body.Targets))
		})
	type tcpRef struct {
		AppRef
		Port int `path:"port"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-tcp", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/router/tcp/{port}", Security: bearer,
		Summary: "Remove a TCP proxy", Tags: []string{"egress"}},
		func(ctx context.Context, in *tcpRef) (*body[apitypes.EgressRouterView], error) {
			return answer(a.o.Service.RemoveEgressTCP(ctx, userOf(ctx), in.Domain, in.App, in.Port))
		})
}
