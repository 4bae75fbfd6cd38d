package netplan

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The overlay routes, it does not bridge: each machine's gears live in its
// block behind its own bridge, and the other blocks are routes through the
// VXLAN device, one static neighbour and forwarding entry per machine (no
// flooding, no learning: a frame goes only to the machine that owns the
// block). Gear-to-gear traffic between machines keeps its addresses (no
// NAT), so the same app sets that separate apps on one bridge separate
// them across machines, in the ip table's forward chain.

// VXLAN and WireGuard are the overlay devices' names.
func (p Plan) VXLAN() string     { return p.Prefix + "vx" }
func (p Plan) WireGuard() string { return p.Prefix + "wg" }

// OverlayDev is the device of the overlay in force.
func (p Plan) OverlayDev() string {
	if p.Overlay != nil && p.Overlay.Mode == OverlayWireGuard {
		return p.WireGuard()
	}
	return p.VXLAN()
}

// VTEP is a block's VXLAN endpoint address: the block's first (network)
// address, never a gear's.
func VTEP(block netip.Prefix) netip.Addr { return block.Masked().Addr() }

// VTEPMAC is a block's VXLAN endpoint hardware address: locally
// administered, derived from the block alone, so that every machine
// computes the same for it whatever its own prefix.
func VTEPMAC(block netip.Prefix) net.HardwareAddr {
	sum := sha256.Sum256([]byte("vtep/" + block.Masked().String()))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// overlayHeader is what VXLAN adds to a packet (outer IPv4, UDP, VXLAN,
// inner Ethernet).
const overlayHeader = 50

// overlaySets declares the cross-machine app sets (this machine's apps,
// with their gears everywhere), the VXLAN endpoints and the machines'
// underlay addresses.
func overlaySets(p Plan, w func(string, ...any)) {
	ids, apps := crossApps(p)
	for i, id := range ids {
		w("\tset xapp%d {", i)
		w("\t\ttype ipv4_addr")
		w("\t\tcomment %q", "app "+id+", every machine")
		w("\t\telements = { %s }", joinAddrs(apps[id]))
		w("\t}")
	}
	vteps := []netip.Addr{VTEP(p.Block)}
	var nodes []netip.Addr
	for _, peer := range p.Overlay.Peers {
		vteps = append(vteps, VTEP(peer.Block))
		nodes = append(nodes, peer.Underlay)
	}
	w("\tset vteps {")
	w("\t\ttype ipv4_addr")
	w("\t\tcomment \"the machines' overlay addresses (their routers, health checks and port-forwards)\"")
	w("\t\telements = { %s }", joinAddrs(vteps))
	w("\t}")
	w("\tset machines {")
	w("\t\ttype ipv4_addr")
	w("\t\tcomment \"the other machines' addresses, the only senders of overlay packets\"")
	if len(nodes) > 0 {
		w("\t\telements = { %s }", joinAddrs(nodes))
	}
	w("\t}")
}

// crossApps are the apps with gears on this machine, sorted, with the
// addresses of their gears on every machine.
func crossApps(p Plan) ([]string, map[string][]netip.Addr) {
	apps := map[string][]netip.Addr{}
	for _, g := range p.Gears {
		apps[g.App] = append(apps[g.App], g.IP)
	}
	for _, g := range p.Remote {
		if _, ok := apps[g.App]; ok {
			apps[g.App] = append(apps[g.App], g.IP)
		}
	}
	ids := make([]string, 0, len(apps))
	for id, as := range apps {
		ids = append(ids, id)
		sort.Slice(as, func(a, b int) bool { return as[a].Less(as[b]) })
	}
	sort.Strings(ids)
	return ids, apps
}

// overlayForward are the forward rules of the overlay: traffic between
// the gear subnet's addresses passes when it is one app's, or comes from a
// machine (its router dialling a gear here), or belongs to a connection
// already allowed; the rest between gears is dropped. Gears never send
// VXLAN themselves.
func overlayForward(p Plan, w func(string, ...any)) {
	o := p.Overlay
	// TCP segments sized for the gears' 1500-byte links would not fit
	// the overlay: clamp the MSS to the route's MTU (first: an accept
	// ends the chain).
	w("\t\toifname %q tcp flags syn tcp option maxseg size set rt mtu", p.OverlayDev())
	w("\t\tiifname %q udp dport %d drop comment \"gears never send the overlay's packets\"", p.Bridge, o.Port)
	w("\t\tip saddr %s ip daddr %s ct state established,related accept", p.Subnet, p.Subnet)
	w("\t\tiifname %q ip saddr @vteps ip daddr %s accept comment \"the machines' routers\"", p.OverlayDev(), p.Block)
	ids, _ := crossApps(p)
	for i := range ids {
		w("\t\tip saddr @xapp%d ip daddr @xapp%d accept", i, i)
	}
	w("\t\tip saddr %s ip daddr %s counter drop comment \"gears of different apps\"", p.Subnet, p.Subnet)
}

// overlayInput keeps the overlay away from the host itself: over VXLAN
// only replies come in, and VXLAN only from the other machines.
func overlayInput(p Plan, w func(string, ...any)) {
	w("\t\tudp dport %d ip saddr != @machines drop comment \"the overlay from other machines only\"", p.Overlay.Port)
	w("\t\tiifname %q ct state established,related accept", p.OverlayDev())
	w("\t\tiifname %q drop comment \"the overlay does not reach the host\"", p.OverlayDev())
}

// ensureOverlay makes the VXLAN device and the routes, neighbours and
// forwarding entries of every other machine's block, and removes those of
// machines gone; without an overlay in the plan it removes the device.
func ensureOverlay(p Plan, changed func(string, ...any)) error {
	// The device of the other mode (or both, without an overlay) goes.
	for _, name := range []string{p.VXLAN(), p.WireGuard()} {
		if p.Overlay != nil && name == p.OverlayDev() {
			continue
		}
		if l, err := netlink.LinkByName(name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("removing %s: %w", name, err)
			}
			changed("removed overlay %s", name)
		}
	}
	switch {
	case p.Overlay == nil:
		return nil
	case p.Overlay.Mode == OverlayWireGuard:
		return ensureWireGuard(p, changed)
	}
	name := p.VXLAN()
	l, err := netlink.LinkByName(name)
	o := p.Overlay
	mac := VTEPMAC(p.Block)
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != o.VNI || vx.Port != int(o.Port) || !vx.SrcAddr.Equal(net.IP(o.Local.AsSlice())) || vx.HardwareAddr.String() != mac.String() {
			netlink.LinkDel(l)
			changed("removed overlay %s (its settings changed)", name)
			err = errors.New("gone")
		}
	}
	if err != nil {
		mtu := 1500
		if under := linkOf(o.Local); under != nil {
			mtu = under.Attrs().MTU
		}
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac, MTU: mtu - overlayHeader},
			VxlanId: o.VNI, SrcAddr: net.IP(o.Local.AsSlice()), Port: int(o.Port), Learning: false}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("creating the overlay %s: %w", name, err)
		}
		changed("created overlay %s (VXLAN %d from %s)", name, o.VNI, o.Local)
		if l, err = netlink.LinkByName(name); err != nil {
			return err
		}
	}
	if err := ensureOverlayAddr(p, l, changed); err != nil {
		return err
	}
	idx := l.Attrs().Index
	wantRoute, wantNeigh, wantFDB := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var errs []error
	for _, peer := range o.Peers {
		vtep, pmac := VTEP(peer.Block), VTEPMAC(peer.Block)
		wantRoute[peer.Block.Masked().String()] = true
		wantNeigh[vtep.String()] = true
		wantFDB[pmac.String()+"/"+peer.Underlay.String()] = true
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, HardwareAddr: pmac, IP: net.IP(peer.Underlay.AsSlice())}); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: forwarding entry: %w", peer.Name, err))
			continue
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, HardwareAddr: pmac, IP: net.IP(vtep.AsSlice())}); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: neighbour: %w", peer.Name, err))
			continue
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: ipnet(peer.Block.Masked().Addr(), peer.Block.Bits()),
			Gw: net.IP(vtep.AsSlice()), Src: net.IP(VTEP(p.Block).AsSlice()), Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: route to %s: %w", peer.Name, peer.Block, err))
		}
	}
	routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && r.Gw != nil && !wantRoute[r.Dst.String()] {
			netlink.RouteDel(&r)
			changed("removed route to %s", r.Dst)
		}
	}
	neighs, _ := netlink.NeighList(idx, netlink.FAMILY_V4)
	for _, n := range neighs {
		if !wantNeigh[n.IP.String()] {
			netlink.NeighDel(&n)
		}
	}
	fdb, _ := netlink.NeighList(idx, unix.AF_BRIDGE)
	for _, n := range fdb {
		if n.IP != nil && !wantFDB[n.HardwareAddr.String()+"/"+n.IP.String()] {
			netlink.NeighDel(&n)
			changed("removed forwarding entry %s", n.HardwareAddr)
		}
	}
	return errors.Join(errs...)
}

// ensureOverlayAddr gives the overlay device this machine's endpoint
// address (its block's first, alone) and sets it up.
func ensureOverlayAddr(p Plan, l netlink.Link, changed func(string, ...any)) error {
	name := l.Attrs().Name
	self := &netlink.Addr{IPNet: ipnet(VTEP(p.Block), 32)}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.IPNet.String() != self.IPNet.String() {
			netlink.AddrDel(l, &a)
		}
	}
	if !hasAddr(addrs, self) {
		if err := netlink.AddrReplace(l, self); err != nil {
			return fmt.Errorf("address of %s: %w", name, err)
		}
		changed("address %s on %s", self.IPNet, name)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		changed("set %s up", name)
	}
	return nil
}

// linkOf is the link that holds addr, nil if none.
func linkOf(addr netip.Addr) netlink.Link {
	links, _ := netlink.LinkList()
	for _, l := range links {
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.Equal(net.IP(addr.AsSlice())) {
				return l
			}
		}
	}
	return nil
}

// overlayKey identifies the overlay's desired state, so that a gear start
// does not re-check it when nothing changed.
func overlayKey(p Plan) string {
	if p.Overlay == nil {
		return "none"
	}
	var b strings.Builder
	key := sha256.Sum256([]byte(p.Overlay.PrivateKey))
	fmt.Fprintf(&b, "%s %s %d %d %s %x", p.OverlayDev(), p.Overlay.Local, p.Overlay.Port, p.Overlay.VNI, p.Block, key[:8])
	for _, peer := range p.Overlay.Peers {
		fmt.Fprintf(&b, " %s=%s@%s/%s", peer.Name, peer.Block, peer.Underlay, peer.PublicKey)
	}
	return b.String()
}
