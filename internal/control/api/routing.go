package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
)

// TCPPorts tells whether a TCP route's port is served (the router).
type TCPPorts interface {
	TCPPortError(port int) error
}

func (a *API) registerRouting() {
	if a.o.CAView != nil {
		huma.Register(a.h, huma.Operation{OperationID: "show-ca", Method: http.MethodGet, Path: "/v1/ca",
			Summary: "The platform root CA", Description: "Trust it to reach apps over HTTPS without warnings. Needs no token.", Tags: []string{"routing"}},
			func(ctx context.Context, in *struct{}) (*body[apitypes.CAView], error) {
				return &body[apitypes.CAView]{Body: *a.o.CAView}, nil
			})
	}

	type aliasIn struct {
		AppRef
		Body apitypes.AliasRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-alias", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/aliases", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Add a custom hostname", Description: "Routes the hostname to the app. A hostname belongs to one app platform-wide.", Tags: []string{"routing"}},
		func(ctx context.Context, in *aliasIn) (*body[apitypes.AliasView], error) {
			app, host, err := a.o.Service.AddAlias(ctx, userOf(ctx), in.Domain, in.App, in.Body.Host)
			if err != nil {
				return nil, asProblem(a, "adding alias", err)
			}
			v, _ := a.aliasViews(app, host)
			return &body[apitypes.AliasView]{Body: v[0]}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-aliases", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/aliases", Security: bearer,
		Summary: "List an app's custom hostnames", Tags: []string{"routing"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.AliasView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			v, err := a.aliasViews(app, "")
			if err != nil {
				return nil, a.internal("listing aliases", err)
			}
			return &body[[]apitypes.AliasView]{Body: v}, nil
		})

	type hostRef struct {
		AppRef
		Host string `path:"host" doc:"The alias hostname"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-alias", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/aliases/{host}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a custom hostname", Description: "With its certificate. Open connections stay until they end.", Tags: []string{"routing"}},
		func(ctx context.Context, in *hostRef) (*struct{}, error) {
			return nil, asProblem(a, "removing alias", a.o.Service.RemoveAlias(ctx, userOf(ctx), in.Domain, in.App, in.Host))
		})

	type certIn struct {
		AppRef
		Host string `path:"host" doc:"The alias hostname"`
		Body apitypes.CertUpload
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-alias-certificate", Method: http.MethodPut, Path: "/v1/domains/{domain}/apps/{app}/aliases/{host}/certificate", Security: bearer,
		Summary: "Upload an alias's certificate", Description: "Checked before it replaces anything: the key matches, the chain verifies, the names cover the host, it is not expired (a warning under 30 days). " +
			"Served by SNI at once, without a restart.", Tags: []string{"routing"}},
		func(ctx context.Context, in *certIn) (*body[apitypes.AliasView], error) {
			app, host, warnings, err := a.o.Service.UploadCert(ctx, userOf(ctx), in.Domain, in.App, in.Host, in.Body)
			var ce *service.CertError
			if errors.As(err, &ce) {
				return nil, problem(http.StatusUnprocessableEntity, "certificate_"+ce.Code, ce.Msg)
			}
			if err != nil {
				return nil, asProblem(a, "uploading certificate", err)
			}
			v, _ := a.aliasViews(app, host)
			v[0].Certificate.Warnings = warnings
			return &body[apitypes.AliasView]{Body: v[0]}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "remove-alias-certificate", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/aliases/{host}/certificate", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove an alias's uploaded certificate", Description: "The alias then gets one by ACME when the platform has it configured.", Tags: []string{"routing"}},
		func(ctx context.Context, in *hostRef) (*struct{}, error) {
			return nil, asProblem(a, "removing certificate", a.o.Service.RemoveCert(ctx, userOf(ctx), in.Domain, in.App, in.Host))
		})

	type tcpIn struct {
		AppRef
		Body apitypes.TCPRouteRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-tcp-route", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/routes/tcp", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Expose a gear port as TCP", Description: "On a platform port, or by SNI on the HTTPS port without terminating TLS. Round-robin over the app's gears with health checks.", Tags: []string{"routing"}},
		func(ctx context.Context, in *tcpIn) (*body[apitypes.TCPRouteView], error) {
			r, err := a.o.Service.AddTCPRoute(ctx, userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "adding TCP route", err)
			}
			return &body[apitypes.TCPRouteView]{Body: a.tcpView(r)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-tcp-routes", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/routes/tcp", Security: bearer,
		Summary: "List an app's TCP routes", Tags: []string{"routing"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.TCPRouteView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			return &body[[]apitypes.TCPRouteView]{Body: a.tcpViews(app)}, nil
		})

	type routeRef struct {
		AppRef
		ID string `path:"id" doc:"port-N or sni-HOST"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-tcp-route", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/routes/tcp/{id}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a TCP route", Description: "The port closes; open connections stay until they end.", Tags: []string{"routing"}},
		func(ctx context.Context, in *routeRef) (*struct{}, error) {
			return nil, asProblem(a, "removing TCP route", a.o.Service.RemoveTCPRoute(ctx, userOf(ctx), in.Domain, in.App, in.ID))
		})
}

// aliasViews lists an app's aliases (only host, if set).
func (a *API) aliasViews(app *store.App, only string) ([]apitypes.AliasView, error) {
	infos, err := a.o.Service.Aliases(app, only)
	out := []apitypes.AliasView{}
	for _, al := range infos {
		v := apitypes.AliasView{Host: al.Host, URL: a.o.AppURL(al.Host), Certificate: apitypes.CertView{Source: "none"}, RedirectsFrom: al.RedirectsFrom}
		if a.o.ACME {
			v.Certificate.Source = "acme"
		}
		if c := al.Cert; c != nil {
			v.Certificate = apitypes.CertView{Source: c.Source, Names: c.Names, Issuer: c.Issuer, NotAfter: c.NotAfter, Forced: c.Forced}
		}
		out = append(out, v)
	}
	return out, err
}

func (a *API) tcpViews(app *store.App) []apitypes.TCPRouteView {
	out := []apitypes.TCPRouteView{}
	rs, _ := a.o.Service.TCPRoutes(app)
	for _, r := range rs {
		out = append(out, a.tcpView(r))
	}
	return out
}

func (a *API) tcpView(r store.TCPRoute) apitypes.TCPRouteView {
	v := apitypes.TCPRouteView{ID: r.ID(), Port: r.Port, SNI: r.SNI, TargetPort: r.TargetPort}
	host := a.o.PublicHost
	if host == "" {
		host = "localhost"
	}
	if r.SNI != "" {
		v.Address = net.JoinHostPort(r.SNI, strconv.Itoa(a.o.HTTPSPort))
	} else {
		v.Address = net.JoinHostPort(host, strconv.Itoa(r.Port))
		if a.o.TCPPorts != nil {
			if err := a.o.TCPPorts.TCPPortError(r.Port); err != nil {
				v.Error = err.Error()
			}
		}
	}
	return v
}

// NewCAView describes the platform root for `gantry ca show`.
func NewCAView(ca *pki.CA) *apitypes.CAView {
	root := ca.Root()
	sum := sha256.Sum256(root.Raw)
	return &apitypes.CAView{PEM: string(ca.RootPEM()), Subject: root.Subject.String(), SHA256: hex.EncodeToString(sum[:]), NotAfter: root.NotAfter, CloudDomain: ca.CloudDomain()}
}

func httpsSuffix(port int) string {
	if port == 443 {
		return ""
	}
	return ":" + strconv.Itoa(port)
}
