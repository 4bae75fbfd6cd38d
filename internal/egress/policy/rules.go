// Package egress is the outbound policy of apps: rules by port label,
// port or range, CIDR and hostname, ordered, first match wins, and a
// platform default. It parses what users type, decides (for `gantry egress
// test`) and renders the nftables ruleset enforced inside each gear's
// network namespace. All of it is pure; applying the ruleset is the
// agent's.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gantry-paas/gantry/internal/names"
)

// Actions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// PortRange is a port or range with a protocol ("" for TCP and UDP).
type PortRange struct {
	Lo, Hi uint16
	Proto  string
}

func (p PortRange) String() string {
	s := strconv.Itoa(int(p.Lo))
	if p.Hi != p.Lo {
		s += "-" + strconv.Itoa(int(p.Hi))
	}
	if p.Proto != "" {
		s += "/" + p.Proto
	}
	return s
}

// Labels name groups of ports, as OpenShift's port labels did.
type Labels map[string][]PortRange

// DefaultLabels is the built-in table; operators extend or override it.
var DefaultLabels = Labels{
	"smtp":       {{25, 25, "tcp"}, {465, 465, "tcp"}, {587, 587, "tcp"}},
	"http":       {{80, 80, "tcp"}, {443, 443, "tcp"}, {8080, 8080, "tcp"}, {8443, 8443, "tcp"}},
	"postgresql": {{5432, 5432, "tcp"}},
	"mysql":      {{3306, 3306, "tcp"}},
	"mongodb":    {{27017, 27017, "tcp"}},
	"amqp":       {{5672, 5672, "tcp"}, {5671, 5671, "tcp"}},
	"redis":      {{6379, 6379, "tcp"}},
	"ssh":        {{22, 22, "tcp"}},
	"git":        {{9418, 9418, "tcp"}},
	"irc":        {{6667, 6667, "tcp"}, {6697, 6697, "tcp"}},
	"dns":        {{53, 53, ""}},
	"ntp":        {{123, 123, "udp"}},
	"ldap":       {{389, 389, "tcp"}, {636, 636, "tcp"}},
	"memcached":  {{11211, 11211, "tcp"}},
}

// Rule is one parsed rule. Text is what the user typed, normalised.
type Rule struct {
	Action string
	Text   string
	All    bool
	Label  string
	Ports  []PortRange  // label, port/range, or the port of a CIDR rule
	Prefix netip.Prefix // CIDR rules
	Host   string       // hostname rules (resolved by the agent), or *.domain
	// Wildcard: Host is *.domain, matching names under domain (at any
	// depth, not domain itself) that the app's own DNS lookups return.
	Wildcard bool
}

// Parse reads one rule: a label (smtp), a port or range with an optional
// protocol (6667, 8000-8100/tcp), a CIDR with an optional port
// (198.51.100.0/24, 10.1.2.3/32:5432), a hostname (api.example.com), or
// all.
func Parse(action, text string, labels Labels) (Rule, error) {
	if action != Allow && action != Deny {
		return Rule{}, fmt.Errorf("action %q: use allow or deny", action)
	}
	t := strings.ToLower(strings.TrimSpace(text))
	r := Rule{Action: action, Text: t}
	switch {
	case t == "":
		return r, fmt.Errorf("empty rule: give a label, port, CIDR, hostname or all")
	case t == "all":
		r.All = true
		return r, nil
	case labels[t] != nil:
		r.Label, r.Ports = t, labels[t]
		return r, nil
	case t[0] >= '0' && t[0] <= '9' && !strings.ContainsAny(strings.SplitN(t, "/", 2)[0], ".:"):
		pr, err := parsePorts(t)
		if err != nil {
			return r, err
		}
		r.Ports = []PortRange{pr}
		return r, nil
	case strings.Contains(t, "/") && (t[0] >= '0' && t[0] <= '9' || strings.Contains(t, ":")):
		return parseCIDR(r, t)
	case strings.HasPrefix(t, "*."):
		if err := names.Hostname(t[2:]); err != nil || !strings.Contains(t[2:], ".") {
			return r, fmt.Errorf("%q is not a wildcard hostname: write *.example.com (names under example.com)", text)
		}
		r.Host, r.Wildcard = t, true
		return r, nil
	}
	if strings.Trim(t, "abcdefghijklmnopqrstuvwxyz-") == "" && !strings.Contains(t, ".") {
		return r, fmt.Errorf("unknown label %q: known labels are %s", t, strings.Join(labels.Names(), ", "))
	}
	if _, err := netip.ParseAddr(t); err == nil {
		return r, fmt.Errorf("%q is an address: write it as a CIDR, %s/32 (or /128)", t, t)
	}
	if err := names.Hostname(t); err != nil || !strings.Contains(t, ".") {
		return r, fmt.Errorf("%q is not a label, port, CIDR or hostname: e.g. smtp, 6667, 8000-8100/tcp, 198.51.100.0/24, 10.1.2.3/32:5432, api.example.com, all", text)
	}
	r.Host = t
	return r, nil
}

func parsePorts(t string) (PortRange, error) {
	spec, proto, _ := strings.Cut(t, "/")
	if proto != "" && proto != "tcp" && proto != "udp" {
		return PortRange{}, fmt.Errorf("protocol %q in %q: use tcp or udp", proto, t)
	}
	lo, hi, isRange := strings.Cut(spec, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	switch {
	case err1 != nil || err2 != nil:
		return PortRange{}, fmt.Errorf("%q is not a port or range: e.g. 6667 or 8000-8100/tcp", t)
	case l < 1 || h > 65535 || l > 65535 || h < 1:
		return PortRange{}, fmt.Errorf("port %q is out of range: ports are 1-65535", spec)
	case l > h:
		return PortRange{}, fmt.Errorf("range %q runs backwards: write %d-%d", spec, h, l)
	}
	return PortRange{Lo: uint16(l), Hi: uint16(h), Proto: proto}, nil
}

func parseCIDR(r Rule, t string) (Rule, error) {
	cidr, port := t, ""
	if i := strings.LastIndex(t, ":"); i > strings.Index(t, "/") {
		cidr, port = t[:i], t[i+1:]
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return r, fmt.Errorf("%q is not a CIDR: e.g. 198.51.100.0/24 or 10.1.2.3/32:5432", t)
	}
	if p.Masked() != p {
		return r, fmt.Errorf("%s has host bits set: did you mean %s?", cidr, p.Masked())
	}
	r.Prefix = p
	if port != "" {
		pr, err := parsePorts(port)
		if err != nil {
			return r, err
		}
		r.Ports = []PortRange{pr}
	}
	return r, nil
}

// MatchHost reports whether a name is covered by a hostname rule's host:
// equal, or under the domain of a *.domain wildcard.
func MatchHost(ruleHost, name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if d, ok := strings.CutPrefix(ruleHost, "*."); ok {
		return strings.HasSuffix(name, "."+d)
	}
	return name == ruleHost
}

// HostRules lists the hosts of the hostname rules, in order, once each.
func (p Policy) HostRules() []string {
	var out []string
	for _, r := range p.Rules {
		if r.Host != "" && !slices.Contains(out, r.Host) {
			out = append(out, r.Host)
		}
	}
	return out
}

// Names lists the labels, sorted.
func (l Labels) Names() []string {
	out := make([]string, 0, len(l))
	for n := range l {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Policy is an app's rules in order and the platform default. Blocked
// (a flagged port scan, until an operator clears it) refuses everything
// but the platform's services.
type Policy struct {
	Rules   []Rule
	Default string // allow or deny
	Blocked bool
	// Via, when set, binds the gears to the egress router: the rules
	// no longer apply to direct traffic, which is refused.
	Via *Via
}

// Decide says whether a connection to dst:port/proto is allowed, and by
// which rule (its index; -1: the default). hosts holds the addresses of
// hostname rules as last resolved.
func (p Policy) Decide(dst netip.Addr, port uint16, proto string, hosts map[string][]netip.Addr) (bool, int) {
	if p.Blocked || p.Via != nil {
		return false, -1
	}
	for i, r := range p.Rules {
		if r.matches(dst, port, proto, hosts) {
			return r.Action == Allow, i
		}
	}
	return p.Default != Deny, -1
}

func (r Rule) matches(dst netip.Addr, port uint16, proto string, hosts map[string][]netip.Addr) bool {
	if r.All {
		return true
	}
	if r.Host != "" {
		for _, a := range hosts[r.Host] {
			if a == dst {
				return true
			}
		}
		return false
	}
	if r.Prefix.IsValid() && !r.Prefix.Contains(dst) {
		return false
	}
	if len(r.Ports) == 0 {
		return r.Prefix.IsValid()
	}
	for _, pr := range r.Ports {
		if port >= pr.Lo && port <= pr.Hi && (pr.Proto == "" || pr.Proto == proto) {
			return true
		}
	}
	return false
}

// Shadowed lists, for each rule, the earlier rule that makes it never
// decide anything (-1 if none): overlapping rules are accepted, and `egress
// list` says which one wins.
func (p Policy) Shadowed() []int {
	out := make([]int, len(p.Rules))
	for i, r := range p.Rules {
		out[i] = -1
		for j := 0; j < i; j++ {
			if covers(p.Rules[j], r) {
				out[i] = j
				break
			}
		}
	}
	return out
}

// covers reports whether every connection r matches, a matches too
// (conservatively: only the obvious cases).
func covers(a, r Rule) bool {
	switch {
	case a.All:
		return true
	case r.All || r.Host != "" || a.Host != "":
		return a.Host != "" && a.Host == r.Host
	case a.Prefix.IsValid() && (!r.Prefix.IsValid() || !a.Prefix.Contains(r.Prefix.Addr()) || a.Prefix.Bits() > r.Prefix.Bits()):
		return false
	case len(a.Ports) == 0:
		return a.Prefix.IsValid()
	case len(r.Ports) == 0:
		return false
	}
	for _, rp := range r.Ports {
		ok := false
		for _, ap := range a.Ports {
			if ap.Lo <= rp.Lo && rp.Hi <= ap.Hi && (ap.Proto == "" || ap.Proto == rp.Proto) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ParseLabels reads an operator's label table, {"name": ["25/tcp",
// "8000-8100"], ...}, over the defaults (a name given replaces the
// default's ports).
func ParseLabels(table map[string][]string) (Labels, error) {
	out := Labels{}
	for n, ps := range DefaultLabels {
		out[n] = ps
	}
	for name, specs := range table {
		name = strings.ToLower(name)
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || name == "" || name == "all" {
			return nil, fmt.Errorf("label %q: use lowercase letters, digits and hyphens (and not \"all\")", name)
		}
		var ports []PortRange
		for _, s := range specs {
			pr, err := parsePorts(s)
			if err != nil {
				return nil, fmt.Errorf("label %s: %w", name, err)
			}
			ports = append(ports, pr)
		}
		if len(ports) == 0 {
			return nil, fmt.Errorf("label %s has no ports", name)
		}
		out[name] = ports
	}
	return out, nil
}
