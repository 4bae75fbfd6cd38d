package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
)

// Egress is what the API asks of the agent about outbound policies.
type Egress interface {
	Policy(app *store.App) (policy.Policy, error)
	ResolveHosts(p policy.Policy) map[string][]netip.Addr
	Apply(appKey string) error
	Enforced() bool
	Labels() policy.Labels
	Destinations(appKey string) (refused, failed []policy.Refusal)
	ClearBlock(appKey string) error
	LookupHost(ctx context.Context, host string) ([]netip.Addr, error)
}

func (a *API) registerEgress() {
	if a.o.Egress == nil {
		return
	}
	a.registerEgressAdmin()
	a.registerSecretsAdmin()
	a.registerDoctor()
	a.registerStoreMigrate()
	a.registerEgressRouter()
	type rulesIn struct {
		AppRef
		Body apitypes.EgressRulesRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-egress-rules", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/egress", Security: bearer,
		Summary: "Allow or deny outbound destinations", Description: "All rules are checked first; on any error nothing changes. Applied to running gears at once.", Tags: []string{"egress"}},
		func(ctx context.Context, in *rulesIn) (*body[apitypes.EgressView], error) {
			app, err := a.o.Service.AddEgressRules(userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "adding egress rules", err)
			}
			return a.egressView(app)
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-egress", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/egress", Security: bearer,
		Summary: "An app's outbound policy", Tags: []string{"egress"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.EgressView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			return a.egressView(app)
		})

	type ruleRef struct {
		AppRef
		N int `path:"n" doc:"rule position, from 1"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-egress-rule", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/egress/{n}", Security: bearer,
		Summary: "Remove an outbound rule", Tags: []string{"egress"}},
		func(ctx context.Context, in *ruleRef) (*body[apitypes.EgressView], error) {
			app, err := a.o.Service.RemoveEgressRule(userOf(ctx), in.Domain, in.App, in.N)
			if err != nil {
				return nil, asProblem(a, "removing egress rule", err)
			}
			return a.egressView(app)
		})

	type testIn struct {
		AppRef
		Body apitypes.EgressTestRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "test-egress", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/egress/test", Security: bearer,
		Summary: "Would the policy allow a destination?", Description: "Says which rule decides. Nothing is sent.", Tags: []string{"egress"}},
		func(ctx context.Context, in *testIn) (*body[apitypes.EgressTestView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			host, portStr, err := net.SplitHostPort(in.Body.Destination)
			port, perr := strconv.Atoi(portStr)
			if err != nil || perr != nil || port < 1 || port > 65535 {
				return nil, invalid(fmt.Sprintf("%q is not HOST:PORT (e.g. smtp.example.com:587 or 198.51.100.7:25)", in.Body.Destination))
			}
			proto := in.Body.Protocol
			if proto == "" {
				proto = "tcp"
			}
			p, err := a.o.Egress.Policy(app)
			if err != nil {
				return nil, a.internal("reading egress policy", err)
			}
			var addrs []netip.Addr
			if ip, err := netip.ParseAddr(host); err == nil {
				addrs = []netip.Addr{ip.Unmap()}
			} else {
				ips, err := a.o.Egress.LookupHost(ctx, host)
				if err != nil {
					return nil, invalid(fmt.Sprintf("%s does not resolve here: %v", host, err))
				}
				addrs = ips
			}
			v := apitypes.EgressTestView{Destination: in.Body.Destination, Allowed: true}
			if p.Via != nil {
				for _, ip := range addrs {
					v.Addresses = append(v.Addresses, ip.String())
				}
				v.Allowed, v.Reason = a.testViaRouter(app.EgressRouter, strings.ToLower(host), addrs, uint16(port), proto)
				return &body[apitypes.EgressTestView]{Body: v}, nil
			}
			hosts := a.o.Egress.ResolveHosts(p)
			// The app looking the name up itself: hostname rules that
			// cover it learn its addresses.
			for _, h := range p.HostRules() {
				if policy.MatchHost(h, host) {
					hosts[h] = append(hosts[h], addrs...)
				}
			}
			// Every address must be allowed for the name to be reachable.
			for _, ip := range addrs {
				v.Addresses = append(v.Addresses, ip.String())
				ok, n := p.Decide(ip, uint16(port), proto, hosts)
				if !ok || v.Reason == "" {
					v.Allowed, v.Rule = ok, n+1
					if n < 0 {
						v.Rule = 0
						v.Reason = "no rule matches: the platform default is " + p.Default
					} else {
						v.Reason = fmt.Sprintf("rule %d: %s %s", n+1, p.Rules[n].Action, p.Rules[n].Text)
					}
				}
				if !ok {
					break
				}
			}
			return &body[apitypes.EgressTestView]{Body: v}, nil
		})
}

func (a *API) registerEgressAdmin() {
	huma.Register(a.h, huma.Operation{OperationID: "clear-egress-block", Method: http.MethodPost, Path: "/v1/admin/egress/{domain}/{app}/clear", Security: bearer,
		Summary: "Let a flagged app's outbound traffic out again", Description: "Admins only. Clears the cut made after a suspected port scan.", Tags: []string{"egress"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.EgressView], error) {
			app, err := a.o.Service.ClearEgressBlock(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "clearing egress block", err)
			}
			return a.egressView(app)
		})
}

func (a *API) egressView(app *store.App) (*body[apitypes.EgressView], error) {
	p, err := a.o.Egress.Policy(app)
	if err != nil {
		return nil, a.internal("reading egress policy", err)
	}
	v := apitypes.EgressView{Rules: []apitypes.EgressRuleView{}, Default: p.Default, Enforced: a.o.Egress.Enforced(), Labels: map[string]string{},
		Blocked: app.EgressBlocked, Router: a.egressRouterView(app)}
	refused, failed := a.o.Egress.Destinations(app.Key())
	v.Refused, v.Failed = refusalViews(refused), refusalViews(failed)
	shadow := p.Shadowed()
	for i, r := range p.Rules {
		rv := apitypes.EgressRuleView{N: i + 1, Action: r.Action, Rule: r.Text, Meaning: meaning(r)}
		if shadow[i] >= 0 {
			rv.ShadowedBy = shadow[i] + 1
		}
		v.Rules = append(v.Rules, rv)
	}
	labels := a.o.Egress.Labels()
	for _, name := range labels.Names() {
		var ports []string
		for _, pr := range labels[name] {
			ports = append(ports, pr.String())
		}
		v.Labels[name] = strings.Join(ports, " ")
	}
	return &body[apitypes.EgressView]{Body: v}, nil
}

func meaning(r policy.Rule) string {
	var ports []string
	for _, pr := range r.Ports {
		ports = append(ports, pr.String())
	}
	switch {
	case r.All:
		return "every destination"
	case r.Wildcard:
		return "the addresses the app's own lookups of names under " + strings.TrimPrefix(r.Host, "*.") + " return"
	case r.Host != "":
		return "the addresses " + r.Host + " resolves to (and what the app's own lookups of it return)"
	case r.Prefix.IsValid() && len(ports) > 0:
		return r.Prefix.String() + " on " + strings.Join(ports, " ")
	case r.Prefix.IsValid():
		return r.Prefix.String() + ", any port"
	}
	return "ports " + strings.Join(ports, " ") + ", any address"
}

// testViaRouter says what happens to a bound app's connection: caught by
// a redirect, through the HTTP proxy's ACL, or refused.
func (a *API) testViaRouter(r *store.EgressRouter, host string, addrs []netip.Addr, port uint16, proto string) (bool, string) {
	if proto == "tcp" {
		for i, rd := range r.Redirects {
			m, err := policy.ParseRedirect(rd.Match)
			if err != nil || m.Port != port {
				continue
			}
			hit := m.Host == host || !m.Prefix.IsValid() && m.Host == ""
			for _, ip := range addrs {
				hit = hit || m.Prefix.IsValid() && m.Prefix.Contains(ip)
			}
			if hit {
				return true, fmt.Sprintf("redirect %d: through the egress router to %s", i+1, rd.Target)
			}
		}
	}
	if r.Proxy && proto == "tcp" {
		var acl policy.ACL
		for _, s := range r.ACL {
			if e, err := policy.ParseACL(s); err == nil {
				acl = append(acl, e)
			}
		}
		ok, n := acl.Allows(host, port)
		switch {
		case ok:
			return true, fmt.Sprintf("only through the egress router's HTTP proxy, which allows it (ACL entry %d: %s); direct connections are refused", n, acl[n-1].Text)
		case n > 0:
			return false, fmt.Sprintf("the egress router's HTTP proxy denies it (ACL entry %d: %s), and direct connections are refused", n, acl[n-1].Text)
		}
		return false, "no entry of the HTTP proxy's ACL allows it, and direct connections are refused (bound to the egress router)"
	}
	return false, "refused: the app is bound to the egress router and no redirect or proxy of it covers this destination"
}

func (a *API) registerSecretsAdmin() {
	huma.Register(a.h, huma.Operation{OperationID: "rotate-platform-key", Method: http.MethodPost, Path: "/v1/admin/secrets/rotate", Security: bearer,
		Summary: "Seal every secret with a new platform key", Description: "Admins only. Env values, cartridge passwords and alias private keys are sealed at rest with the platform key (its own 0600 file beside the database); this makes a new key, reseals everything in one transaction and drops the old key.", Tags: []string{"admin"}},
		func(ctx context.Context, in *struct{}) (*body[apitypes.SecretsRotation], error) {
			n, keyFile, err := a.o.Service.RotateKey(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "rotating the platform key", err)
			}
			return &body[apitypes.SecretsRotation]{Body: apitypes.SecretsRotation{Resealed: n, KeyFile: keyFile}}, nil
		})
}

func (a *API) registerDoctor() {
	if a.o.Doctor == nil {
		return
	}
	huma.Register(a.h, huma.Operation{OperationID: "doctor", Method: http.MethodGet, Path: "/v1/admin/doctor", Security: bearer,
		Summary: "Check the server's host", Description: "Admins only. Kernel features, cgroups, runc and nft, IP forwarding, bridge netfilter, the iptables FORWARD policy (Docker, ufw), firewall managers, DNS for gears, ports and disk space, each ok, warning or error with the fix.", Tags: []string{"admin"}},
		func(ctx context.Context, in *struct{}) (*body[[]apitypes.DoctorCheck], error) {
			if !userOf(ctx).Admin {
				return nil, problem(http.StatusForbidden, apitypes.CodeForbidden, "the host check needs an admin token")
			}
			return &body[[]apitypes.DoctorCheck]{Body: a.o.Doctor()}, nil
		})
}

func (a *API) registerStoreMigrate() {
	if a.o.MigrateStore == nil {
		return
	}
	huma.Register(a.h, huma.Operation{OperationID: "migrate-store", Method: http.MethodPost, Path: "/v1/admin/store/migrate", Security: bearer,
		Summary: "Move a machine that runs alone to etcd, live", Description: "Admins only. The server refuses changes for a moment, starts a new process of itself that takes over its sockets (no request is refused), and that process starts a cluster with an embedded etcd member, moves every record into it and keeps the SQLite file aside; the gears run on. Other machines then join with `gantry node token`.", Tags: []string{"admin", "nodes"}},
		func(ctx context.Context, in *struct{ Body apitypes.StoreMigrateRequest }) (*body[apitypes.StoreMigrateView], error) {
			if !userOf(ctx).Admin {
				return nil, problem(http.StatusForbidden, apitypes.CodeForbidden, "moving the store needs an admin token")
			}
			v, err := a.o.MigrateStore(ctx, in.Body)
			if err != nil {
				var p *apitypes.Problem
				if errors.As(err, &p) {
					return nil, p
				}
				return nil, problem(http.StatusBadGateway, apitypes.CodeInternal, err.Error())
			}
			return &body[apitypes.StoreMigrateView]{Body: *v}, nil
		})
}

func refusalViews(rs []policy.Refusal) []apitypes.EgressRefusal {
	vs := make([]apitypes.EgressRefusal, 0, len(rs))
	for _, r := range rs {
		vs = append(vs, apitypes.EgressRefusal{Dest: r.Dest, Proto: r.Proto, Packets: r.Packets})
	}
	return vs
}
