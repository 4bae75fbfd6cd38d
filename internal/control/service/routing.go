package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
	"github.com/gantry-paas/gantry/internal/names"
)

// HostParam normalises a hostname from a path (case, trailing dot) as
// aliases are stored.
func HostParam(h string) string { return strings.ToLower(strings.TrimSuffix(h, ".")) }

// AddAlias routes host to one of the caller's apps. A hostname belongs to
// one app platform-wide; another user's names (exact, apex redirect or
// wildcard) are refused; with verification on, host must be under a name
// the caller has claimed.
func (s *Service) AddAlias(ctx context.Context, caller *store.User, domain, name, text string) (*store.App, string, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, "", err
	}
	host, err := names.Alias(text, s.o.CloudDomain)
	if err != nil {
		return nil, "", refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if slices.Contains(s.o.PlatformHosts, host) {
		return nil, "", refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%s is the platform's own address: use a hostname of your own", host))
	}
	err = s.st.Update(func(tx *store.Tx) error {
		all, err := store.ListAliases(tx)
		if err != nil {
			return err
		}
		if why := hostConflict(host, app.Owner, all); why != "" {
			return refuse(Conflict, apitypes.CodeNameTaken, why)
		}
		need, err := s.verificationRequired(tx, caller)
		if err != nil {
			return err
		}
		if need {
			c, err := claimFor(tx, caller.Name, host)
			if err != nil {
				return err
			}
			if c == nil {
				apex := strings.TrimPrefix(host, "*.")
				if strings.Count(apex, ".") > 1 {
					apex = apex[strings.IndexByte(apex, '.')+1:]
				}
				return refuse(Forbidden, "name_not_claimed", fmt.Sprintf("%s is under no DNS name you have claimed: prove you control it with `gantry alias claim %s` (it says which TXT record to publish), or ask an admin to grant it", host, apex))
			}
		}
		if err := tx.Create(store.HostKey(host), &store.Host{Name: host, AppKey: app.Key()}); err != nil {
			var h store.Host
			if tx.Get(store.HostKey(host), &h) == nil && h.AppKey == app.Key() {
				return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("%s is already an alias of %s", host, app.Name))
			}
			return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use by another app: a hostname can belong to one app only", host))
		}
		return tx.Create(store.AliasKey(host), &store.Alias{Host: host, AppKey: app.Key(), Owner: app.Owner, Created: time.Now().UTC()})
	})
	if err != nil {
		return nil, "", err
	}
	s.log.Info("alias added", "app", app.FullName(), "host", host, "user", caller.Name)
	s.inForce(ctx)
	return app, host, nil
}

// RemoveAlias removes one of the app's aliases with its certificate.
func (s *Service) RemoveAlias(ctx context.Context, caller *store.User, domain, name, host string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	host = HostParam(host)
	err = s.st.Update(func(tx *store.Tx) error {
		var al store.Alias
		if err := tx.Get(store.AliasKey(host), &al); err != nil || al.AppKey != app.Key() {
			return refuse(NotFound, "alias_not_found", fmt.Sprintf("%s is not an alias of %s: see `gantry alias list %s`", host, app.Name, app.Name))
		}
		tx.Delete(store.CertKey(host))
		tx.Delete(store.HostKey(host))
		return tx.Delete(store.AliasKey(host))
	})
	if err != nil {
		return err
	}
	s.log.Info("alias removed", "app", app.FullName(), "host", host, "user", caller.Name)
	s.inForce(ctx)
	return nil
}

// CertError is a certificate refused by the checks (the API answers 422).
type CertError = pki.CheckError

// UploadCert checks an alias's certificate and only then stores it; it is
// served by SNI once the call returns. The warnings are what the caller
// should know (e.g. it expires within 30 days).
func (s *Service) UploadCert(ctx context.Context, caller *store.User, domain, name, host string, up apitypes.CertUpload) (*store.App, string, []string, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, "", nil, err
	}
	host = HostParam(host)
	var al store.Alias
	if s.st.View(func(tx *store.Tx) error { return tx.Get(store.AliasKey(host), &al) }) != nil || al.AppKey != app.Key() {
		return nil, "", nil, refuse(NotFound, "alias_not_found", fmt.Sprintf("%s is not an alias of %s: add it first with `gantry alias add %s %s`", host, app.Name, app.Name, host))
	}
	checkHost := host
	if strings.HasPrefix(host, "*.") {
		checkHost = "wildcard-check" + host[1:]
	}
	c, err := pki.Check(pki.Upload{Host: checkHost, Certificate: []byte(up.Certificate), PrivateKey: []byte(up.PrivateKey),
		Passphrase: up.Passphrase, Force: up.Force}, s.o.CertRoots, time.Now())
	if err != nil {
		return nil, "", nil, err
	}
	rec := store.Cert{Host: host, AppKey: app.Key(), Source: "upload", CertPEM: string(c.CertPEM), KeyPEM: string(c.KeyPEM),
		Names: c.Names, Issuer: c.Issuer, NotAfter: c.NotAfter, Forced: up.Force && len(c.Warnings) > 0, Updated: time.Now().UTC()}
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Put(store.CertKey(host), &rec) }); err != nil {
		return nil, "", nil, fmt.Errorf("saving certificate: %w", err)
	}
	s.log.Info("certificate uploaded", "app", app.FullName(), "host", host, "not_after", c.NotAfter, "user", caller.Name)
	s.inForce(ctx)
	return app, host, c.Warnings, nil
}

// RemoveCert drops an alias's uploaded certificate.
func (s *Service) RemoveCert(ctx context.Context, caller *store.User, domain, name, host string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	host = HostParam(host)
	err = s.st.Update(func(tx *store.Tx) error {
		var c store.Cert
		if err := tx.Get(store.CertKey(host), &c); err != nil || c.AppKey != app.Key() {
			return refuse(NotFound, "certificate_not_found", fmt.Sprintf("%s has no uploaded certificate", host))
		}
		return tx.Delete(store.CertKey(host))
	})
	if err != nil {
		return err
	}
	s.inForce(ctx)
	return nil
}

// AliasInfo is an alias with its certificate and the apex that redirects
// to it, if any.
type AliasInfo struct {
	store.Alias
	Cert          *store.Cert
	RedirectsFrom string
}

// Aliases lists an app's aliases (only host, if set).
func (s *Service) Aliases(app *store.App, only string) ([]AliasInfo, error) {
	var out []AliasInfo
	err := s.st.View(func(tx *store.Tx) error {
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
			info := AliasInfo{Alias: al}
			var c store.Cert
			if tx.Get(store.CertKey(al.Host), &c) == nil {
				info.Cert = &c
			}
			if apex, ok := strings.CutPrefix(al.Host, "www."); ok && strings.Contains(apex, ".") && !hosts[apex] {
				if ok, _ := tx.Has(store.HostKey(apex)); !ok {
					info.RedirectsFrom = apex
				}
			}
			out = append(out, info)
		}
		return nil
	})
	return out, err
}

// AddTCPRoute exposes a gear port of the app on a platform port, or by
// SNI on the HTTPS port (TLS passthrough).
func (s *Service) AddTCPRoute(ctx context.Context, caller *store.User, domain, name string, b apitypes.TCPRouteRequest) (store.TCPRoute, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return store.TCPRoute{}, err
	}
	r := store.TCPRoute{AppKey: app.Key(), TargetPort: b.TargetPort, Created: time.Now().UTC()}
	invalid := func(msg string) error { return refuse(Invalid, apitypes.CodeInvalid, msg) }
	switch {
	case (b.Port == 0) == (b.SNI == ""):
		return r, invalid("pass either --port N (a platform port) or --sni HOST (TLS passthrough on the HTTPS port)")
	case b.TargetPort < 0 || b.TargetPort > 65535:
		return r, invalid(fmt.Sprintf("target port %d is out of range: use 1-65535", b.TargetPort))
	case b.Port != 0 && (b.Port < 1024 || b.Port > 65535):
		return r, invalid(fmt.Sprintf("port %d is out of range: TCP routes use ports 1024-65535", b.Port))
	case b.Port != 0 && slices.Contains(s.o.ReservedPorts, b.Port):
		return r, refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("port %d is one of the platform's own ports: choose another", b.Port))
	}
	if b.SNI != "" {
		if r.SNI, err = names.Alias(b.SNI, ""); err != nil || strings.HasPrefix(r.SNI, "*") {
			if err == nil {
				err = errors.New("SNI routes need an exact name, not a wildcard")
			}
			return r, invalid(err.Error())
		}
		if s.o.HTTPSPort == 0 {
			return r, refuse(Conflict, apitypes.CodeConflict, "this platform serves no HTTPS port (the server runs with --https off), so there is no TLS passthrough")
		}
	} else {
		r.Port = b.Port
		// Bound by the router once stored; refuse a port in use now.
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(b.Port))
		if err != nil {
			return r, refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("port %d is in use on this machine: choose another", b.Port))
		}
		ln.Close()
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if ok, _ := tx.Has(r.Key()); ok {
			return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("%s is already routed: choose another", r.ID()))
		}
		if r.SNI != "" {
			if err := tx.Create(store.HostKey(r.SNI), &store.Host{Name: r.SNI, AppKey: app.Key()}); err != nil {
				return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("the hostname %s is already in use: a hostname can belong to one app only", r.SNI))
			}
		}
		return tx.Create(r.Key(), &r)
	})
	if err != nil {
		return r, err
	}
	s.log.Info("tcp route added", "app", app.FullName(), "route", r.Key(), "user", caller.Name)
	s.inForce(ctx)
	return r, nil
}

// TCPRoutes lists an app's TCP routes.
func (s *Service) TCPRoutes(app *store.App) ([]store.TCPRoute, error) {
	var out []store.TCPRoute
	err := s.st.View(func(tx *store.Tx) error {
		rs, err := store.ListTCPRoutes(tx)
		for _, r := range rs {
			if r.AppKey == app.Key() {
				out = append(out, r)
			}
		}
		return err
	})
	return out, err
}

// RemoveTCPRoute removes one of the app's TCP routes by ID (port-N,
// sni-HOST or a bare port).
func (s *Service) RemoveTCPRoute(ctx context.Context, caller *store.User, domain, name, id string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	key := store.TCPRouteKey(id)
	err = s.st.Update(func(tx *store.Tx) error {
		var r store.TCPRoute
		if err := tx.Get(key, &r); err != nil || r.AppKey != app.Key() {
			return refuse(NotFound, "route_not_found", fmt.Sprintf("%s has no TCP route %s: see `gantry route list %s`", app.Name, id, app.Name))
		}
		if r.SNI != "" {
			tx.Delete(store.HostKey(r.SNI))
		}
		return tx.Delete(key)
	})
	if err != nil {
		return err
	}
	s.inForce(ctx)
	return nil
}
