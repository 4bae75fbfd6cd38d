package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
	"github.com/gantry-paas/gantry/internal/names"
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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			host, err := names.Alias(in.Body.Host, a.o.CloudDomain)
			if err != nil {
				return nil, invalid(err.Error())
			}
			if slices.Contains(a.o.PlatformHosts, host) {
				return nil, invalid(fmt.Sprintf("%s is the platform's own address: use a hostname of your own", host))
			}
			err = a.o.Store.Update(func(tx *store.Tx) error {
				all, err := store.ListAliases(tx)
				if err != nil {
					return err
				}
				if why := hostConflict(host, app.Owner, all); why != "" {
					return problem(http.StatusConflict, apitypes.CodeNameTaken, why)
				}
				u := userOf(ctx)
				need, err := a.verificationRequired(tx, u)
				if err != nil {
					return err
				}
				if need {
					c, err := claimFor(tx, u.Name, host)
					if err != nil {
						return err
					}
					if c == nil {
						apex := strings.TrimPrefix(host, "*.")
						if strings.Count(apex, ".") > 1 {
							apex = apex[strings.IndexByte(apex, '.')+1:]
						}
						return problem(http.StatusForbidden, "name_not_claimed", fmt.Sprintf("%s is under no DNS name you have claimed: prove you control it with `gantry alias claim %s` (it says which TXT record to publish), or ask an admin to grant it", host, apex))
					}
				}
				if err := tx.Create(store.HostKey(host), &store.Host{Name: host, AppKey: app.Key()}); err != nil {
					var h store.Host
					if tx.Get(store.HostKey(host), &h) == nil && h.AppKey == app.Key() {
						return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("%s is already an alias of %s", host, app.Name))
					}
					return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use by another app: a hostname can belong to one app only", host))
				}
				return tx.Create(store.AliasKey(host), &store.Alias{Host: host, AppKey: app.Key(), Owner: app.Owner, Created: time.Now().UTC()})
			})
			if err != nil {
				return nil, asProblem(a, "adding alias", err)
			}
			a.log.Info("alias added", "app", app.FullName(), "host", host, "user", userOf(ctx).Name)
			a.inForce(ctx)
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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			host := hostParam(in.Host)
			err = a.o.Store.Update(func(tx *store.Tx) error {
				var al store.Alias
				if err := tx.Get(store.AliasKey(host), &al); err != nil || al.AppKey != app.Key() {
					return notFound("alias_not_found", fmt.Sprintf("%s is not an alias of %s: see `gantry alias list %s`", host, app.Name, app.Name))
				}
				tx.Delete(store.CertKey(host))
				tx.Delete(store.HostKey(host))
				return tx.Delete(store.AliasKey(host))
			})
			if err != nil {
				return nil, asProblem(a, "removing alias", err)
			}
			a.log.Info("alias removed", "app", app.FullName(), "host", host, "user", userOf(ctx).Name)
			a.inForce(ctx)
			return nil, nil
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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			host := hostParam(in.Host)
			var al store.Alias
			if a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.AliasKey(host), &al) }) != nil || al.AppKey != app.Key() {
				return nil, notFound("alias_not_found", fmt.Sprintf("%s is not an alias of %s: add it first with `gantry alias add %s %s`", host, app.Name, app.Name, host))
			}
			checkHost := host
			if strings.HasPrefix(host, "*.") {
				checkHost = "wildcard-check" + host[1:]
			}
			c, err := pki.Check(pki.Upload{Host: checkHost, Certificate: []byte(in.Body.Certificate), PrivateKey: []byte(in.Body.PrivateKey),
				Passphrase: in.Body.Passphrase, Force: in.Body.Force}, a.o.CertRoots, time.Now())
			if err != nil {
				var ce *pki.CheckError
				if errors.As(err, &ce) {
					return nil, problem(http.StatusUnprocessableEntity, "certificate_"+ce.Code, ce.Msg)
				}
				return nil, a.internal("checking certificate", err)
			}
			rec := store.Cert{Host: host, AppKey: app.Key(), Source: "upload", CertPEM: string(c.CertPEM), KeyPEM: string(c.KeyPEM),
				Names: c.Names, Issuer: c.Issuer, NotAfter: c.NotAfter, Forced: in.Body.Force && len(c.Warnings) > 0, Updated: time.Now().UTC()}
			if err := a.o.Store.Update(func(tx *store.Tx) error { return tx.Put(store.CertKey(host), &rec) }); err != nil {
				return nil, a.internal("saving certificate", err)
			}
			a.log.Info("certificate uploaded", "app", app.FullName(), "host", host, "not_after", c.NotAfter, "user", userOf(ctx).Name)
			a.inForce(ctx)
			v, _ := a.aliasViews(app, host)
			v[0].Certificate.Warnings = c.Warnings
			return &body[apitypes.AliasView]{Body: v[0]}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "remove-alias-certificate", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/aliases/{host}/certificate", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove an alias's uploaded certificate", Description: "The alias then gets one by ACME when the platform has it configured.", Tags: []string{"routing"}},
		func(ctx context.Context, in *hostRef) (*struct{}, error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			host := hostParam(in.Host)
			err = a.o.Store.Update(func(tx *store.Tx) error {
				var c store.Cert
				if err := tx.Get(store.CertKey(host), &c); err != nil || c.AppKey != app.Key() {
					return notFound("certificate_not_found", fmt.Sprintf("%s has no uploaded certificate", host))
				}
				return tx.Delete(store.CertKey(host))
			})
			if err != nil {
				return nil, asProblem(a, "removing certificate", err)
			}
			a.inForce(ctx)
			return nil, nil
		})

	type tcpIn struct {
		AppRef
		Body apitypes.TCPRouteRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-tcp-route", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/routes/tcp", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Expose a gear port as TCP", Description: "On a platform port, or by SNI on the HTTPS port without terminating TLS. Round-robin over the app's gears with health checks.", Tags: []string{"routing"}},
		func(ctx context.Context, in *tcpIn) (*body[apitypes.TCPRouteView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			b := in.Body
			r := store.TCPRoute{AppKey: app.Key(), TargetPort: b.TargetPort, Created: time.Now().UTC()}
			switch {
			case (b.Port == 0) == (b.SNI == ""):
				return nil, invalid("pass either --port N (a platform port) or --sni HOST (TLS passthrough on the HTTPS port)")
			case b.TargetPort < 0 || b.TargetPort > 65535:
				return nil, invalid(fmt.Sprintf("target port %d is out of range: use 1-65535", b.TargetPort))
			case b.Port != 0 && (b.Port < 1024 || b.Port > 65535):
				return nil, invalid(fmt.Sprintf("port %d is out of range: TCP routes use ports 1024-65535", b.Port))
			case b.Port != 0 && slices.Contains(a.o.ReservedPorts, b.Port):
				return nil, problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("port %d is one of the platform's own ports: choose another", b.Port))
			}
			if b.SNI != "" {
				if r.SNI, err = names.Alias(b.SNI, ""); err != nil || strings.HasPrefix(r.SNI, "*") {
					if err == nil {
						err = errors.New("SNI routes need an exact name, not a wildcard")
					}
					return nil, invalid(err.Error())
				}
				if a.o.HTTPSPort == 0 {
					return nil, problem(http.StatusConflict, apitypes.CodeConflict, "this platform serves no HTTPS port (the server runs with --https off), so there is no TLS passthrough")
				}
			} else {
				r.Port = b.Port
				// Bound by the router once stored; refuse a port in use now.
				ln, err := net.Listen("tcp", ":"+strconv.Itoa(b.Port))
				if err != nil {
					return nil, problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("port %d is in use on this machine: choose another", b.Port))
				}
				ln.Close()
			}
			err = a.o.Store.Update(func(tx *store.Tx) error {
				if ok, _ := tx.Has(r.Key()); ok {
					return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("%s is already routed: choose another", r.ID()))
				}
				if r.SNI != "" {
					if err := tx.Create(store.HostKey(r.SNI), &store.Host{Name: r.SNI, AppKey: app.Key()}); err != nil {
						return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use: a hostname can belong to one app only", r.SNI))
					}
				}
				return tx.Create(r.Key(), &r)
			})
			if err != nil {
				return nil, asProblem(a, "adding TCP route", err)
			}
			a.log.Info("tcp route added", "app", app.FullName(), "route", r.Key(), "user", userOf(ctx).Name)
			a.inForce(ctx)
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
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			key := store.TCPRouteKey(in.ID)
			err = a.o.Store.Update(func(tx *store.Tx) error {
				var r store.TCPRoute
				if err := tx.Get(key, &r); err != nil || r.AppKey != app.Key() {
					return notFound("route_not_found", fmt.Sprintf("%s has no TCP route %s: see `gantry route list %s`", app.Name, in.ID, app.Name))
				}
				if r.SNI != "" {
					tx.Delete(store.HostKey(r.SNI))
				}
				return tx.Delete(key)
			})
			if err != nil {
				return nil, asProblem(a, "removing TCP route", err)
			}
			a.inForce(ctx)
			return nil, nil
		})
}

// aliasViews lists an app's aliases (only host, if set).
func (a *API) aliasViews(app *store.App, only string) ([]apitypes.AliasView, error) {
	var out []apitypes.AliasView
	err := a.o.Store.View(func(tx *store.Tx) error {
		als, err := store.ListAliases(tx)
		if err != nil {
			return err
		}
		hosts := map[string]bool{}
		for _, al := range als {
			hosts[al.Host] = true
		}
		for _, al := range als {
			if al.AppKey != app.Key() || (only != "" && al.Host != only) {
				continue
			}
			v := apitypes.AliasView{Host: al.Host, URL: a.o.AppURL(al.Host), Certificate: apitypes.CertView{Source: "none"}}
			if a.o.ACME {
				v.Certificate.Source = "acme"
			}
			var c store.Cert
			if tx.Get(store.CertKey(al.Host), &c) == nil {
				v.Certificate = apitypes.CertView{Source: c.Source, Names: c.Names, Issuer: c.Issuer, NotAfter: c.NotAfter, Forced: c.Forced}
			}
			if apex, ok := strings.CutPrefix(al.Host, "www."); ok && strings.Contains(apex, ".") && !hosts[apex] {
				if ok, _ := tx.Has(store.HostKey(apex)); !ok {
					v.RedirectsFrom = apex
				}
			}
			out = append(out, v)
		}
		return nil
	})
	if out == nil {
		out = []apitypes.AliasView{}
	}
	return out, err
}

func (a *API) tcpViews(app *store.App) []apitypes.TCPRouteView {
	out := []apitypes.TCPRouteView{}
	a.o.Store.View(func(tx *store.Tx) error {
		rs, err := store.ListTCPRoutes(tx)
		for _, r := range rs {
			if r.AppKey == app.Key() {
				out = append(out, a.tcpView(r))
			}
		}
		return err
	})
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

// inForce waits until the router runs with the store's current revision,
// so that a route or certificate change is served when the call returns.
func (a *API) inForce(ctx context.Context) {
	if a.o.Applied == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a.o.Applied.WaitApplied(ctx, a.o.Store.Rev())
}

// hostParam normalises a hostname from a path (case, trailing dot) as
// aliases are stored.
func hostParam(h string) string { return strings.ToLower(strings.TrimSuffix(h, ".")) }
