package policy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"
)

// Table is the nftables table of the policy inside a gear's namespace.
const Table = "gantry_egress"

// Always is what a gear may reach whatever its policy: the platform's
// services on the host (router, SSH endpoint), the app's own gears (its
// databases) and the DNS resolvers.
type Always struct {
	Gateway   netip.Addr
	HostPorts []uint16
	Peers     []netip.Addr
	Resolvers []netip.Addr
	// DNS is the platform's DNS forwarder on the gateway (invalid: none).
	// The DNS of apps with hostname rules is translated to it, so that
	// the addresses their own lookups return are learned (LearnedSet).
	DNS netip.AddrPort
}

// LearnedSet names the set of addresses the app's own DNS lookups
// returned for a hostname rule's host (v6: the IPv6 one). Its elements
// time out; the agent adds them (inet Table).
func LearnedSet(host string, v6 bool) string {
	h := fnv.New32a()
	h.Write([]byte(host))
	fam := 4
	if v6 {
		fam = 6
	}
	return fmt.Sprintf("host%d_%08x", fam, h.Sum32())
}

// RefusedSet is the set of the table that records refused destinations
// (address . protocol . port, each with a counter, kept 10 minutes).
const RefusedSet = "refused4"

// FailedSet records destinations that refused or could not be reached
// at the remote end: a TCP reset answering a connection that never got
// established, or an ICMP error about one (same key and keeping as
// RefusedSet). Destinations that drop packets silently are not seen.
const FailedSet = "failed4"

// ownMark marks (in conntrack) the connections the policy itself refused:
// the reset or ICMP error its reject sends back carries the same
// conntrack entry, and must not be counted again as the destination's.
const ownMark = "0x67616e74"

// failed are the input chain's rules that fill FailedSet.
var failed = []string{
	"meta nfproto ipv4 tcp flags rst ct direction reply ct status ! assured ct mark != " + ownMark + " add @" + FailedSet + " { ct original ip daddr . ct protocol . ct original proto-dst } comment \"reset before established\"",
	"meta nfproto ipv4 icmp type { destination-unreachable, time-exceeded } ct state related ct mark != " + ownMark + " add @" + FailedSet + " { ct original ip daddr . ct protocol . ct original proto-dst } comment \"unreachable\"",
}

// record is the statement that adds a refused TCP/UDP destination to the
// set and marks the connection as the policy's refusal; it precedes every
// reject.
const record = "meta nfproto ipv4 meta l4proto { tcp, udp } ct mark set " + ownMark + " add @" + RefusedSet + " { ip daddr . meta l4proto . th dport }"

// Ruleset renders the policy as an nft script that replaces the rules
// atomically (one transaction). Refused TCP connections get a reset and
// other protocols an ICMP error, so connect() fails at once; refused TCP
// and UDP destinations are recorded in RefusedSet. hosts holds the
// resolved addresses of hostname rules; a hostname not resolved yet
// matches nothing. A blocked policy (a flagged port scan) refuses
// everything but the platform.
func Ruleset(p Policy, hosts map[string][]netip.Addr, always Always) string {
	var b strings.Builder
	// One transaction: the chain is emptied and refilled, the set of
	// refused destinations (and its counters) stays.
	fmt.Fprintf(&b, "add table inet %s\nadd chain inet %s output { type filter hook output priority 0; policy accept; }\nflush chain inet %s output\n", Table, Table, Table)
	fmt.Fprintf(&b, "add chain inet %s nat_out { type nat hook output priority -100; policy accept; }\nflush chain inet %s nat_out\n", Table, Table)
	fmt.Fprintf(&b, "add chain inet %s input { type filter hook input priority 0; policy accept; }\nflush chain inet %s input\ntable inet %s {\n", Table, Table, Table)
	for _, set := range []string{RefusedSet, FailedSet} {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttypeof ip daddr . meta l4proto . th dport\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 10m\n\t\tcounter\n\t}\n", set)
	}
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n")
	for _, line := range failed {
		b.WriteString("\t\t" + line + "\n")
	}
	b.WriteString("\t}\n")
	for _, h := range p.HostRules() {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\tcomment %q\n\t}\n", LearnedSet(h, false), "learned: "+h)
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t\tcomment %q\n\t}\n", LearnedSet(h, true), "learned: "+h)
	}
	b.WriteString("\tchain output {\n")
	b.WriteString("\t\ttype filter hook output priority 0; policy accept;\n")
	b.WriteString("\t\toifname \"lo\" accept\n")
	b.WriteString("\t\tct state established,related accept\n")
	if always.Gateway.IsValid() && len(always.HostPorts) > 0 {
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport { %s } accept comment \"the platform\"\n", family(always.Gateway), always.Gateway, portList(always.HostPorts))
	}
	for fam, addrs := range byFamily(always.Peers) {
		fmt.Fprintf(&b, "\t\t%s daddr { %s } accept comment \"the app's own gears\"\n", fam, addrs)
	}
	for fam, addrs := range byFamily(always.Resolvers) {
		fmt.Fprintf(&b, "\t\t%s daddr { %s } meta l4proto { tcp, udp } th dport 53 accept comment \"DNS\"\n", fam, addrs)
	}
	if always.DNS.IsValid() {
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto { tcp, udp } th dport %d accept comment \"DNS (the platform's forwarder)\"\n", family(always.DNS.Addr()), always.DNS.Addr(), always.DNS.Port())
	}
	if p.Blocked {
		refuseAll(&b, "blocked: port scan")
	}
	if v := p.Via; v != nil {
		// Bound to the egress router: its ports on the gateway, nothing
		// else; the app's own rules do not apply to direct traffic.
		if always.Gateway.IsValid() && len(v.Ports) > 0 {
			fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport { %s } accept comment \"the egress router\"\n", family(always.Gateway), always.Gateway, portList(v.Ports))
		}
		refuseAll(&b, "bound to the egress router")
		b.WriteString("\t}\n")
		natChain(&b, v, hosts, always.Gateway, netip.AddrPort{})
		b.WriteString("}\n")
		return b.String()
	}
	for i := 0; i < len(p.Rules); {
		// Consecutive address-only rules with one verdict become one set
		// lookup (first match is kept: nothing between them decides
		// otherwise), so long lists cost a gear's connections little.
		if j := cidrRun(p.Rules, i); j-i > 1 {
			r := p.Rules[i]
			var cidrs []string
			for _, c := range p.Rules[i:j] {
				cidrs = append(cidrs, c.Prefix.String())
			}
			merged := r
			merged.Prefix = netip.Prefix{}
			for _, line := range ruleLines(merged, hosts) {
				fmt.Fprintf(&b, "\t\t%s daddr { %s } %s comment \"%d-%d: %s %d addresses\"\n", family(r.Prefix.Addr()), strings.Join(cidrs, ", "), line, i+1, j, r.Action, j-i)
			}
			i = j
			continue
		}
		r := p.Rules[i]
		for _, line := range ruleLines(r, hosts) {
			fmt.Fprintf(&b, "\t\t%s comment \"%d: %s %s\"\n", line, i+1, r.Action, r.Text)
		}
		i++
	}
	if p.Default == Deny {
		refuseAll(&b, "default: deny")
	}
	b.WriteString("\t}\n")
	var dns netip.AddrPort
	if len(p.HostRules()) > 0 && !p.Blocked {
		dns = always.DNS
	}
	natChain(&b, nil, hosts, always.Gateway, dns)
	b.WriteString("}\n")
	return b.String()
}

// refuseAll records and refuses whatever reaches it.
func refuseAll(b *strings.Builder, why string) {
	fmt.Fprintf(b, "\t\t%s comment %q\n", record, why)
	fmt.Fprintf(b, "\t\tmeta l4proto tcp counter reject with tcp reset comment %q\n", why)
	fmt.Fprintf(b, "\t\tcounter reject with icmpx type admin-prohibited comment %q\n", why)
}

// natChain renders the redirect chain: each redirect's destinations are
// translated to its egress router port on the gateway (before the filter
// chain, which then sees the router as the destination). A valid dns
// sends every DNS query to the platform's forwarder.
func natChain(b *strings.Builder, v *Via, hosts map[string][]netip.Addr, gw netip.Addr, dns netip.AddrPort) {
	b.WriteString("\tchain nat_out {\n\t\ttype nat hook output priority -100; policy accept;\n")
	if dns.IsValid() && dns.Addr().Is4() {
		fmt.Fprintf(b, "\t\tmeta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 dnat ip to %s comment \"DNS through the platform's forwarder: hostname rules learn the app's answers\"\n", dns)
	}
	if v != nil && gw.IsValid() {
		fam := family(gw)
		for i, n := range v.Redirects {
			var dests []string
			switch m := n.Match; {
			case m.Host != "":
				if addrs := byFamily(hosts[m.Host])[fam]; addrs != "" {
					dests = append(dests, fmt.Sprintf("%s daddr { %s } ", fam, addrs))
				}
			case m.Prefix.IsValid():
				if family(m.Prefix.Addr()) == fam {
					dests = append(dests, fmt.Sprintf("%s daddr %s ", fam, m.Prefix))
				}
			default:
				dests = append(dests, "")
			}
			for _, d := range dests {
				fmt.Fprintf(b, "\t\t%stcp dport %d dnat %s to %s comment \"redirect %d: %s\"\n", d, n.Match.Port, fam, netip.AddrPortFrom(gw, n.ToPort), i+1, n.Match.Text)
			}
		}
	}
	b.WriteString("\t}\n")
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

// byFamily splits addresses into ip and ip6 set bodies, sorted.
func byFamily(addrs []netip.Addr) map[string]string {
	groups := map[string][]string{}
	sorted := append([]netip.Addr(nil), addrs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Less(sorted[j]) })
	for _, a := range sorted {
		groups[family(a)] = append(groups[family(a)], a.Unmap().String())
	}
	out := map[string]string{}
	for f, as := range groups {
		out[f] = strings.Join(as, ", ")
	}
	return out
}

func family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "ip"
	}
	return "ip6"
}

// ruleLines renders one rule as nft rule bodies (without comment).
func ruleLines(r Rule, hosts map[string][]netip.Addr) []string {
	var dests []string // destination matches; "" for any
	switch {
	case r.Host != "":
		for fam, addrs := range byFamily(hosts[r.Host]) {
			dests = append(dests, fmt.Sprintf("%s daddr { %s }", fam, addrs))
		}
		sort.Strings(dests)
		// And what the app's own lookups returned.
		dests = append(dests, "ip daddr @"+LearnedSet(r.Host, false), "ip6 daddr @"+LearnedSet(r.Host, true))
	case r.Prefix.IsValid():
		dests = []string{fmt.Sprintf("%s daddr %s", family(r.Prefix.Addr()), r.Prefix)}
	default:
		dests = []string{""}
	}
	var ports []string // protocol and port matches; "" for any
	if len(r.Ports) == 0 {
		ports = []string{""}
	} else {
		byProto := map[string][]string{}
		for _, pr := range r.Ports {
			v := fmt.Sprint(pr.Lo)
			if pr.Hi != pr.Lo {
				v = fmt.Sprintf("%d-%d", pr.Lo, pr.Hi)
			}
			byProto[pr.Proto] = append(byProto[pr.Proto], v)
		}
		for _, proto := range []string{"tcp", "udp", ""} {
			vs := byProto[proto]
			if len(vs) == 0 {
				continue
			}
			set := strings.Join(vs, ", ")
			if len(vs) > 1 {
				set = "{ " + set + " }"
			}
			switch proto {
			case "":
				ports = append(ports, "meta l4proto { tcp, udp } th dport "+set)
			default:
				ports = append(ports, proto+" dport "+set)
			}
		}
	}
	var out []string
	for _, d := range dests {
		for _, p := range ports {
			m := strings.TrimSpace(d + " " + p)
			if m != "" {
				m += " "
			}
			if r.Action == Allow {
				out = append(out, m+"counter accept")
				continue
			}
			out = append(out, m+record)
			switch {
			case strings.HasPrefix(p, "tcp "):
				out = append(out, m+"counter reject with tcp reset")
			case strings.HasPrefix(p, "udp "):
				out = append(out, m+"counter reject with icmpx type port-unreachable")
			default:
				out = append(out, m+"meta l4proto tcp counter reject with tcp reset", m+"counter reject with icmpx type admin-prohibited")
			}
		}
	}
	return out
}

// cidrRun returns the end of the run of rules from i that are plain CIDRs
// (no ports) of one family with the same action and no overlap between
// them (an nft interval set refuses overlaps).
func cidrRun(rules []Rule, i int) int {
	first := rules[i]
	if !first.Prefix.IsValid() || len(first.Ports) > 0 {
		return i + 1
	}
	j := i + 1
	for ; j < len(rules); j++ {
		r := rules[j]
		if !r.Prefix.IsValid() || len(r.Ports) > 0 || r.Action != first.Action || family(r.Prefix.Addr()) != family(first.Prefix.Addr()) {
			break
		}
		overlaps := false
		for _, prev := range rules[i:j] {
			if prev.Prefix.Overlaps(r.Prefix) {
				overlaps = true
				break
			}
		}
		if overlaps {
			break
		}
	}
	return j
}
