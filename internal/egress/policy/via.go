package policy

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gantry-paas/gantry/internal/names"
)

// This file is the pure side of the egress router: the HTTP proxy's ACLs,
// the destinations a redirect catches, and the binding of a gear to the
// router (rendered by Ruleset).

// ACLEntry is one entry of an HTTP proxy ACL: a hostname
// (api.example.com), a wildcard (*.example.com: every name under
// example.com, at any depth, not example.com itself), a CIDR or address
// (for requests to IP literals) or all, each with an optional :PORT, and
// a leading ! for a denial.
type ACLEntry struct {
	Text     string
	Deny     bool
	All      bool
	Host     string // exact name, or the suffix after "*." when Wildcard
	Wildcard bool
	Prefix   netip.Prefix
	Port     uint16 // 0: any port
}

// ACL is an HTTP proxy's access list. A destination is allowed when an
// allow entry matches it and no deny entry does: denials win whatever
// their position, so `*.example.com !bad.example.com` reads as it says.
type ACL []ACLEntry

// ParseACL reads one ACL entry.
func ParseACL(text string) (ACLEntry, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	e := ACLEntry{}
	if strings.HasPrefix(t, "!") {
		e.Deny = true
		t = t[1:]
	}
	if t == "" {
		return e, fmt.Errorf("empty ACL entry %q: write a hostname, *.domain, a CIDR or all, with ! to deny", text)
	}
	// An optional :PORT (IPv6 CIDRs are written [2001:db8::/32]:443).
	if strings.HasPrefix(t, "[") || strings.Count(t, ":") == 1 {
		host, port, err := splitPort(t)
		if err != nil {
			return e, fmt.Errorf("ACL entry %q: %v", text, err)
		}
		t, e.Port = host, port
	}
	switch {
	case t == "all":
		e.All = true
	case strings.Contains(t, "/") || isAddr(t):
		p, err := parsePrefix(t)
		if err != nil {
			return e, fmt.Errorf("ACL entry %q: %v", text, err)
		}
		e.Prefix = p
	case strings.HasPrefix(t, "*."):
		host := t[2:]
		if err := names.Hostname(host); err != nil || !strings.Contains(host, ".") {
			return e, fmt.Errorf("ACL entry %q: a wildcard is *.DOMAIN with a domain of at least two labels (*.example.com)", text)
		}
		e.Host, e.Wildcard = host, true
	default:
		if strings.Contains(t, "*") {
			return e, fmt.Errorf("ACL entry %q: a wildcard may only be a whole first label (*.example.com)", text)
		}
		if err := names.Hostname(t); err != nil {
			return e, fmt.Errorf("ACL entry %q is not a hostname, *.domain, CIDR or all: %v", text, err)
		}
		e.Host = t
	}
	e.Text = normalACL(e)
	return e, nil
}

func normalACL(e ACLEntry) string {
	var s string
	switch {
	case e.All:
		s = "all"
	case e.Prefix.IsValid():
		s = e.Prefix.String()
		if e.Prefix.IsSingleIP() {
			s = e.Prefix.Addr().String()
		}
	case e.Wildcard:
		s = "*." + e.Host
	default:
		s = e.Host
	}
	if e.Port != 0 {
		if e.Prefix.IsValid() && e.Prefix.Addr().Is6() {
			s = "[" + s + "]"
		}
		s += ":" + strconv.Itoa(int(e.Port))
	}
	if e.Deny {
		s = "!" + s
	}
	return s
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.Trim(s, "[]")
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("%q is not a CIDR (198.51.100.0/24)", s)
	}
	if p.Masked() != p {
		return p, fmt.Errorf("%s has host bits set: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

func splitPort(s string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: write HOST:PORT", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q: use 1-65535", port)
	}
	return host, uint16(n), nil
}

// matches says whether the entry covers host (a name or an IP literal)
// and port.
func (e ACLEntry) matches(host string, addr netip.Addr, port uint16) bool {
	if e.Port != 0 && e.Port != port {
		return false
	}
	switch {
	case e.All:
		return true
	case e.Prefix.IsValid():
		return addr.IsValid() && e.Prefix.Contains(addr)
	case addr.IsValid():
		return false // names never match IP literals
	case e.Wildcard:
		return strings.HasSuffix(host, "."+e.Host)
	default:
		return host == e.Host
	}
}

// Allows says whether the ACL lets host:port through, and the entry that
// decided (from 1; 0: nothing matched, which denies).
func (a ACL) Allows(host string, port uint16) (bool, int) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	addr, _ := netip.ParseAddr(strings.Trim(host, "[]"))
	addr = addr.Unmap()
	allow := 0
	for i, e := range a {
		if !e.matches(host, addr, port) {
			continue
		}
		if e.Deny {
			return false, i + 1
		}
		if allow == 0 {
			allow = i + 1
		}
	}
	return allow != 0, allow
}

// RedirectMatch is what a redirect catches: connections from a gear to
// HOST:PORT (its resolved addresses), to a CIDR or address with a port,
// or to any address on a port (*:PORT). Redirects are TCP.
type RedirectMatch struct {
	Text   string
	Host   string
	Prefix netip.Prefix
	Port   uint16
}

// ParseRedirect reads a redirect's match.
func ParseRedirect(text string) (RedirectMatch, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	host, port, err := splitPort(t)
	if err != nil {
		return RedirectMatch{}, fmt.Errorf("redirect %q: %v (smtp.example.com:25, 198.51.100.7:25, 198.51.100.0/24:25 or *:25)", text, err)
	}
	m := RedirectMatch{Port: port}
	switch {
	case host == "*":
	case strings.Contains(host, "/") || isAddr(host):
		if m.Prefix, err = parsePrefix(host); err != nil {
			return m, fmt.Errorf("redirect %q: %v", text, err)
		}
	default:
		if err := names.Hostname(host); err != nil {
			return m, fmt.Errorf("redirect %q: %q is not a hostname, address, CIDR or *", text, host)
		}
		m.Host = host
	}
	m.Text = t
	if m.Prefix.IsValid() {
		m.Text = net.JoinHostPort(normalACL(ACLEntry{Prefix: m.Prefix}), strconv.Itoa(int(port)))
	}
	return m, nil
}

// ParseTarget reads a destination the egress router dials: HOST:PORT.
func ParseTarget(text string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	host, port, err := splitPort(t)
	if err != nil {
		return "", fmt.Errorf("target %q: %v", text, err)
	}
	if !isAddr(host) {
		if err := names.Hostname(host); err != nil {
			return "", fmt.Errorf("target %q: %q is not a hostname or address", text, host)
		}
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(int(port))), nil
}

// Via binds a gear to the egress router: the gear may leave only for the
// router's Ports on the gateway (besides what Always allows), and the
// Redirects' destinations are translated to their router ports.
type Via struct {
	Ports     []uint16
	Redirects []NAT
}

// NAT sends a redirect's destinations to a port of the egress router.
type NAT struct {
	Match  RedirectMatch
	ToPort uint16
}
