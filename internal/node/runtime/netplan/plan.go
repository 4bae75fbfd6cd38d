// Package netplan owns the network plumbing of namespaced gears: a host
// bridge, one network namespace per gear with a veth pair to the bridge and
// an IP from the platform subnet, and the nftables rules that NAT gears'
// outbound traffic, keep gears of different apps apart, and limit what gears
// reach on the host.
//
// It works from desired state: Reconcile(plan) makes the kernel match the
// plan and reports what it changed; run twice, the second run changes
// nothing. What to build (names, addresses, the ruleset) is computed by pure
// functions of the plan; the side effects sit behind the Kernel interface.
package netplan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Plan is the desired network state of this machine.
type Plan struct {
	// Prefix distinguishes this platform's objects (netns, links, tables),
	// so that tests run beside a real server. Default "gantry".
	Prefix string
	Bridge string       // host bridge, default Prefix+"0"
	Subnet netip.Prefix // default 10.88.0.0/16; the first address is the host's
	// HostTCPPorts are the host's ports gears may reach on the bridge
	// address (the router, the SSH endpoint). Everything else on the host is
	// refused.
	HostTCPPorts []uint16
	HostUDPPorts []uint16 // the same for UDP (the DNS forwarder)
	// Forbidden are networks gears never reach through the host, whatever
	// their app's policy (link-local and private ranges: cloud metadata,
	// the host's own networks, other bridges), but for DNS to Resolvers;
	// the gear subnet itself is never in it. Empty: no such limit.
	Forbidden []netip.Prefix
	Resolvers []netip.Addr
	Gears     []Gear
	// Block is this machine's share of Subnet in a cluster: the bridge's
	// and its gears' addresses. Unset, the whole subnet.
	Block netip.Prefix
	// Overlay joins the machines' blocks (a cluster); nil on one machine.
	Overlay *Overlay
	// Remote are the other machines' gears of the apps that have gears
	// here: they count in the app sets (the cross-machine rules) only.
	Remote []Gear
}

// Overlay carries gear traffic between machines: each machine routes the
// other machines' blocks to them, in UDP to their underlay address. Mode
// "vxlan" (the default) sends it in the clear, to the blocks' VXLAN
// endpoints (the block's first address, a MAC derived from the block);
// "wireguard" encrypts it with the kernel's WireGuard, each machine
// known by its public key.
type Overlay struct {
	Mode  string     // vxlan or wireguard
	Local netip.Addr // this machine's underlay address (its advertised one)
	Port  uint16     // UDP port, default 4789 (VXLAN), 51820 (WireGuard)
	VNI   int        // VXLAN's network identifier, default 4788
	// PrivateKey is this machine's WireGuard key (base64).
	PrivateKey string
	Peers      []Peer
}

// Overlay modes.
const (
	OverlayVXLAN     = "vxlan"
	OverlayWireGuard = "wireguard"
)

// Peer is another machine of the overlay.
type Peer struct {
	Name      string
	Block     netip.Prefix
	Underlay  netip.Addr
	PublicKey string // its WireGuard key (base64)
}

// PrivateNets are the networks gears may not reach unless the operator
// allows it (--egress-private): link-local (cloud metadata at
// 169.254.169.254), the private ranges of RFC 1918 and the shared range
// of RFC 6598, where the host's own networks and other bridges live.
var PrivateNets = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// Gear is one namespaced gear.
type Gear struct {
	ID  string
	App string // app ID: gears of one app may talk to each other
	IP  netip.Addr
	// Parked: its link and rules, not its address (a standby gear,
	// whose app waits for it; the wake gives it).
	Parked bool
}

// DefaultSubnet is the platform subnet unless configured.
var DefaultSubnet = netip.MustParsePrefix("10.88.0.0/16")

// Normalize fills defaults and sorts, so that equal plans render equally.
func (p Plan) Normalize() Plan {
	if p.Prefix == "" {
		p.Prefix = "gantry"
	}
	if p.Bridge == "" {
		p.Bridge = p.Prefix + "0"
	}
	if !p.Subnet.IsValid() {
		p.Subnet = DefaultSubnet
	}
	p.Subnet = p.Subnet.Masked()
	if !p.Block.IsValid() {
		p.Block = p.Subnet
	}
	p.Block = p.Block.Masked()
	p.Gears = append([]Gear(nil), p.Gears...)
	sort.Slice(p.Gears, func(i, j int) bool { return p.Gears[i].ID < p.Gears[j].ID })
	p.Remote = slices.Clone(p.Remote)
	sort.Slice(p.Remote, func(i, j int) bool { return p.Remote[i].ID < p.Remote[j].ID })
	if o := p.Overlay; o != nil {
		c := *o
		if c.Mode == "" {
			c.Mode = OverlayVXLAN
		}
		if c.Port == 0 {
			c.Port = 4789
			if c.Mode == OverlayWireGuard {
				c.Port = 51820
			}
		}
		if c.VNI == 0 {
			c.VNI = 4788
		}
		c.Peers = slices.Clone(c.Peers)
		sort.Slice(c.Peers, func(i, j int) bool { return c.Peers[i].Block.Addr().Less(c.Peers[j].Block.Addr()) })
		p.Overlay = &c
	}
	ports := append([]uint16(nil), p.HostTCPPorts...)
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	p.HostTCPPorts = slices.Compact(ports)
	udp := slices.Clone(p.HostUDPPorts)
	slices.Sort(udp)
	p.HostUDPPorts = slices.Compact(udp)
	return p
}

// Gateway is the host's address on the bridge: the first address of the
// machine's block (of the subnet on one machine).
func (p Plan) Gateway() netip.Addr {
	if p.Block.IsValid() {
		return p.Block.Masked().Addr().Next()
	}
	return p.Subnet.Masked().Addr().Next()
}

// BridgeMAC is the bridge's fixed hardware address: locally administered,
// derived from the prefix.
func (p Plan) BridgeMAC() net.HardwareAddr {
	sum := sha256.Sum256([]byte("bridge/" + p.Prefix))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// NetnsName is the named network namespace of a gear.
func (p Plan) NetnsName(gearID string) string { return p.Prefix + "-" + gearID }

// HostVeth is the host side of a gear's veth pair (at most 15 bytes).
func (p Plan) HostVeth(gearID string) string { return linkName("v", p.Prefix, gearID) }

func linkName(kind, prefix, id string) string {
	sum := sha256.Sum256([]byte(prefix + "/" + id))
	return "g" + kind + hex.EncodeToString(sum[:])[:12] // 14 bytes
}

// Validate checks a plan before anything is changed.
func (p Plan) Validate() error {
	if p.Subnet.Addr().Is6() || p.Subnet.Bits() > 30 {
		return fmt.Errorf("gear subnet %s must be IPv4 with room for gears (at most /30)", p.Subnet)
	}
	if b := p.Block; b.IsValid() && (b.Bits() < p.Subnet.Bits() || !p.Subnet.Contains(b.Addr()) || b.Bits() > 30) {
		return fmt.Errorf("the machine's gear block %s is not a block of the gear subnet %s", b, p.Subnet)
	}
	if o := p.Overlay; o != nil {
		if !o.Local.Is4() {
			return fmt.Errorf("the overlay needs this machine's IPv4 address (got %q)", o.Local)
		}
		if o.Mode != OverlayVXLAN && o.Mode != OverlayWireGuard {
			return fmt.Errorf("overlay %q: choose vxlan or wireguard", o.Mode)
		}
		for _, peer := range o.Peers {
			if !p.Subnet.Contains(peer.Block.Addr()) || peer.Block.Overlaps(p.Block) || !peer.Underlay.Is4() {
				return fmt.Errorf("machine %s: block %s at %s does not fit the gear subnet %s beside this machine's %s", peer.Name, peer.Block, peer.Underlay, p.Subnet, p.Block)
			}
		}
	}
	seen := map[netip.Addr]string{}
	for _, g := range p.Gears {
		// A gear outside the block (an address from before the machine
		// joined a cluster) still works here: it gets a host route.
		if !p.Subnet.Contains(g.IP) || g.IP == p.Gateway() || g.IP == p.Subnet.Addr() || (p.Block.IsValid() && g.IP == p.Block.Masked().Addr()) {
			return fmt.Errorf("gear %s: address %s is not a gear address in %s", g.ID, g.IP, p.Subnet)
		}
		if other, ok := seen[g.IP]; ok {
			return fmt.Errorf("gears %s and %s both have address %s", other, g.ID, g.IP)
		}
		seen[g.IP] = g.ID
	}
	return nil
}

// Ruleset renders the nftables rules for the plan. Two tables:
//
//   - bridge PREFIX: frames between gears on the bridge pass only between
//     gears of the same app;
//   - ip PREFIX: outbound NAT for gears, and the host's input from gears
//     limited to the given ports (refused with a reset, so that a gear
//     fails fast instead of waiting for a timeout).
//
// Each table carries a comment with the ruleset's hash, so that Reconcile
// knows, even after a restart, whether the kernel already has it.
func Ruleset(p Plan) string {
	p = p.Normalize()
	body := rulesetBody(p)
	sum := sha256.Sum256([]byte(body))
	return strings.ReplaceAll(body, "@HASH@", hex.EncodeToString(sum[:8]))
}

func rulesetBody(p Plan) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	// Declare, flush and define in one transaction: the swap is atomic.
	w("table bridge %s", p.Prefix)
	w("delete table bridge %s", p.Prefix)
	w("table bridge %s {", p.Prefix)
	w("\tcomment \"gantry:@HASH@\"")
	// Gears of one app reach each other: the pairs (source . destination)
	// are elements of one set, so that a gear coming or going changes
	// elements (Apply adds and deletes them), not the ruleset.
	w("\tset pairs {")
	w("\t\ttype ipv4_addr . ipv4_addr")
	if pairs := Pairs(p); len(pairs) > 0 {
		w("\t\telements = { %s }", joinPairs(pairs))
	}
	w("\t}")
	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tip saddr . ip daddr @pairs accept")
	w("\t\tip saddr %s ip daddr %s drop", p.Subnet, p.Subnet)
	w("\t\tether type ip6 drop")
	w("\t}")
	w("}")
	w("table ip %s", p.Prefix)
	w("delete table ip %s", p.Prefix)
	w("table ip %s {", p.Prefix)
	w("\tcomment \"gantry:@HASH@\"")
	if o := p.Overlay; o != nil {
		overlaySets(p, w)
	}
	if len(p.Forbidden) > 0 || p.Overlay != nil {
		w("\tchain forward {")
		w("\t\ttype filter hook forward priority filter; policy accept;")
	}
	if o := p.Overlay; o != nil {
		overlayForward(p, w)
	}
	if len(p.Forbidden) > 0 {
		// Gears' traffic routed through the host to the platform's
		// forbidden networks (DNS to the resolvers aside) is refused.
		var nets []string
		for _, n := range p.Forbidden {
			if n.Addr().Is4() {
				nets = append(nets, n.Masked().String())
			}
		}
		var res []string
		for _, a := range p.Resolvers {
			if a.Is4() {
				res = append(res, a.String())
			}
		}
		if len(res) > 0 {
			w("\t\tiifname %q ip daddr { %s } meta l4proto { tcp, udp } th dport 53 accept", p.Bridge, strings.Join(res, ", "))
		}
		w("\t\tiifname %q ip daddr != %s ip daddr { %s } counter reject with icmp type admin-prohibited comment \"private networks: --egress-private\"", p.Bridge, p.Subnet, strings.Join(nets, ", "))
	}
	if len(p.Forbidden) > 0 || p.Overlay != nil {
		w("\t}")
	}
	w("\tchain postrouting {")
	w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	w("\t\tip saddr %s ip daddr != %s masquerade", p.Subnet, p.Subnet)
	w("\t}")
	w("\tchain input {")
	w("\t\ttype filter hook input priority filter; policy accept;")
	w("\t\tiifname %q ct state established,related accept", p.Bridge)
	if len(p.HostTCPPorts) > 0 {
		var ports []string
		for _, port := range p.HostTCPPorts {
			ports = append(ports, fmt.Sprint(port))
		}
		w("\t\tiifname %q ip daddr %s tcp dport { %s } accept", p.Bridge, p.Gateway(), strings.Join(ports, ", "))
	}
	if len(p.HostUDPPorts) > 0 {
		var ports []string
		for _, port := range p.HostUDPPorts {
			ports = append(ports, fmt.Sprint(port))
		}
		w("\t\tiifname %q ip daddr %s udp dport { %s } accept", p.Bridge, p.Gateway(), strings.Join(ports, ", "))
	}
	if p.Overlay != nil {
		overlayInput(p, w)
	}
	w("\t\tiifname %q icmp type echo-request accept", p.Bridge)
	w("\t\tiifname %q meta l4proto tcp reject with tcp reset", p.Bridge)
	w("\t\tiifname %q reject with icmp type admin-prohibited", p.Bridge)
	w("\t}")
	w("}")
	return b.String()
}

// Pair is a source and a destination gear of one app.
type Pair [2]netip.Addr

func (q Pair) String() string { return q[0].String() + " . " + q[1].String() }

// Pairs are the ordered pairs of distinct gears of one app, sorted.
func Pairs(p Plan) []Pair {
	apps := map[string][]netip.Addr{}
	for _, g := range p.Gears {
		apps[g.App] = append(apps[g.App], g.IP)
	}
	var out []Pair
	for _, ips := range apps {
		for _, a := range ips {
			for _, b := range ips {
				if a != b {
					out = append(out, Pair{a, b})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i][0].Compare(out[j][0]); c != 0 {
			return c < 0
		}
		return out[i][1].Less(out[j][1])
	})
	return out
}

func joinPairs(ps []Pair) string {
	s := make([]string, len(ps))
	for i, q := range ps {
		s[i] = q.String()
	}
	return strings.Join(s, ", ")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// Allocate returns the first free gear address after last (round-robin,
// so that an address just freed is not handed out again at once: peers may
// still hold connections to it), skipping the network, gateway and
// broadcast addresses and those in use. A zero last starts at the
// beginning.
func Allocate(subnet netip.Prefix, used map[netip.Addr]bool, last netip.Addr) (netip.Addr, error) {
	subnet = subnet.Masked()
	first := subnet.Addr().Next().Next()
	var lastUsable netip.Addr
	for a := first; subnet.Contains(a.Next()); a = a.Next() {
		lastUsable = a
		if a.Is4() && subnet.Bits() < 24 && a.As4()[3] < 250 && a.As4()[2] == 0 {
			// Walking a big subnet to its end is slow; compute it instead.
			lastUsable = broadcast(subnet).Prev()
			break
		}
	}
	if !lastUsable.IsValid() {
		return netip.Addr{}, fmt.Errorf("the gear subnet %s is too small", subnet)
	}
	start := first
	if last.IsValid() && subnet.Contains(last) && last.Compare(lastUsable) < 0 && last.Compare(first) >= 0 {
		start = last.Next()
	}
	a := start
	for {
		if !used[a] {
			return a, nil
		}
		if a == lastUsable {
			a = first
		} else {
			a = a.Next()
		}
		if a == start {
			return netip.Addr{}, fmt.Errorf("the gear subnet %s is full", subnet)
		}
	}
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
