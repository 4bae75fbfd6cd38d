package router

import (
	"crypto/tls"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Route is what the router knows about one hostname.
type Route struct {
	Host      string
	AppKey    string
	App       string // DOMAIN/NAME, for logs
	Stopped   bool
	Idle      bool     // scaled to zero: requests wait while it wakes
	Endpoints []string // routed gears, sorted
	// Alias is set for a custom hostname (not the canonical one).
	Alias bool
	// RedirectTo sends every request to this host instead (the apex of a
	// domain whose www. is an alias).
	RedirectTo string
	// HTTPS is the app's mode: allow, redirect or off.
	HTTPS string
	// Timeouts for this app; zero: the router's defaults.
	ConnectTimeout, ReadTimeout, TunnelTimeout time.Duration
	// Cert is the alias's own certificate (uploaded or ACME), nil if none.
	Cert *tls.Certificate

	counters []*atomic.Int64 // open requests per endpoint, set by Apply
	stats    *appStats       // the app's, set by Apply
}

// TCPRoute is a raw TCP route: a platform port or an SNI name on the TLS
// port, to the app's gears at a port.
type TCPRoute struct {
	Port    int
	SNI     string
	AppKey  string
	App     string
	Idle    bool
	Members []string // gear IP:port, sorted
	Tunnel  time.Duration
}

// Table maps hostnames to routes. A Table is immutable once built.
type Table struct {
	Rev    int64
	Routes map[string]*Route
	TCP    map[int]*TCPRoute    // platform port -> route
	SNI    map[string]*TCPRoute // TLS passthrough by server name
}

// State is what the table is compiled from, as the control side hands it
// over: the apps, their routed gears, aliases, certificates, TCP routes.
type State struct {
	Apps      []App
	Gears     []Gear
	Aliases   []Alias
	Certs     []Cert
	TCPRoutes []TCPSpec
}

// App is an app as the router sees it.
type App struct {
	Key, Name, Host string // Name is DOMAIN/NAME, for logs
	Stopped, Idle   bool
	HTTPS           string // HTTPSAllow, HTTPSRedirect or HTTPSOff; "" is allow
	// Timeouts of the app; zero: the router's defaults.
	ConnectTimeout, ReadTimeout, TunnelTimeout time.Duration
}

// Gear is one gear that takes requests (running, not a cartridge).
type Gear struct {
	AppKey string
	IP     string
	Port   int
}

// Endpoint is the gear's IP:port.
func (g Gear) Endpoint() string { return g.IP + ":" + strconv.Itoa(g.Port) }

// Alias is a custom hostname of an app.
type Alias struct{ Host, AppKey string }

// Cert is an alias's own certificate, PEM encoded.
type Cert struct{ Host, CertPEM, KeyPEM string }

// TCPSpec is a TCP route: a platform port, or an SNI name on the TLS port,
// to the app's gears at TargetPort (0: the gear's own port).
type TCPSpec struct {
	Port       int
	SNI        string
	AppKey     string
	TargetPort int
}

// HTTPS modes of an app.
const (
	HTTPSAllow    = "allow"    // http and https both served (default)
	HTTPSRedirect = "redirect" // http redirects to https
	HTTPSOff      = "off"      // https redirects to http
)

// Compile builds the route table: each app's canonical host and aliases
// route to its gears; the apex of a www. alias redirects
// to it unless the apex is itself routed; TCP routes reach the gears'
// target port. parseCert turns a stored certificate into a pair (nil if
// unusable); with it, Compile is a pure function.
func Compile(rev int64, s State, parseCert func(*Cert) *tls.Certificate) *Table {
	t := &Table{Rev: rev, Routes: map[string]*Route{}, TCP: map[int]*TCPRoute{}, SNI: map[string]*TCPRoute{}}
	byKey := map[string]*Route{}
	apps := map[string]*App{}
	for i := range s.Apps {
		a := &s.Apps[i]
		apps[a.Key] = a
		r := &Route{Host: a.Host, AppKey: a.Key, App: a.Name, Stopped: a.Stopped, Idle: a.Idle && !a.Stopped,
			HTTPS: a.HTTPS, ConnectTimeout: a.ConnectTimeout, ReadTimeout: a.ReadTimeout, TunnelTimeout: a.TunnelTimeout}
		if r.HTTPS == "" {
			r.HTTPS = HTTPSAllow
		}
		t.Routes[a.Host] = r
		byKey[a.Key] = r
	}
	gears := map[string][]Gear{}
	for _, g := range s.Gears {
		if r := byKey[g.AppKey]; r != nil {
			r.Endpoints = append(r.Endpoints, g.Endpoint())
			gears[g.AppKey] = append(gears[g.AppKey], g)
		}
	}
	for _, r := range t.Routes {
		sort.Strings(r.Endpoints)
	}
	certs := map[string]*Cert{}
	for i := range s.Certs {
		certs[s.Certs[i].Host] = &s.Certs[i]
	}
	for _, al := range s.Aliases {
		base := byKey[al.AppKey]
		if base == nil {
			continue
		}
		r := *base
		r.Host, r.Alias = al.Host, true
		if c := certs[al.Host]; c != nil && parseCert != nil {
			r.Cert = parseCert(c)
		}
		t.Routes[al.Host] = &r
	}
	for _, al := range s.Aliases {
		apex, ok := strings.CutPrefix(al.Host, "www.")
		if !ok || !strings.Contains(apex, ".") || t.Routes[apex] != nil {
			continue
		}
		www := t.Routes[al.Host]
		r := &Route{Host: apex, AppKey: www.AppKey, App: www.App, Alias: true, RedirectTo: al.Host, HTTPS: www.HTTPS}
		if c := certs[apex]; c != nil && parseCert != nil {
			r.Cert = parseCert(c)
		} else if www.Cert != nil && www.Cert.Leaf != nil && www.Cert.Leaf.VerifyHostname(apex) == nil {
			r.Cert = www.Cert
		}
		t.Routes[apex] = r
	}
	for _, tr := range s.TCPRoutes {
		a := apps[tr.AppKey]
		if a == nil {
			continue
		}
		r := &TCPRoute{Port: tr.Port, SNI: tr.SNI, AppKey: a.Key, App: a.Name, Idle: a.Idle && !a.Stopped, Tunnel: a.TunnelTimeout}
		for _, g := range gears[a.Key] {
			port := tr.TargetPort
			if port == 0 {
				port = g.Port
			}
			r.Members = append(r.Members, Gear{IP: g.IP, Port: port}.Endpoint())
		}
		sort.Strings(r.Members)
		if tr.SNI != "" {
			t.SNI[tr.SNI] = r
		} else {
			t.TCP[tr.Port] = r
		}
	}
	return t
}

// Lookup finds the route of a host: its own, else a wildcard alias one
// level up (*.example.com serves a.example.com, not a.b.example.com).
func (t *Table) Lookup(host string) *Route {
	if r := t.Routes[host]; r != nil {
		return r
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		return t.Routes["*"+host[i:]]
	}
	return nil
}

// countOf is the open-request counter of one of the route's endpoints.
func (r *Route) countOf(ep string) *atomic.Int64 {
	for i, e := range r.Endpoints {
		if e == ep {
			return r.counters[i]
		}
	}
	return new(atomic.Int64) // the endpoint left the route: count nowhere
}
