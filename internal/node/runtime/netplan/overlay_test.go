package netplan

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func wgKeys(t *testing.T) (string, string) {
	t.Helper()
	a, err := NewWireGuardKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewWireGuardKey()
	return a, b
}

// The WireGuard device's configuration: this machine's key and port, each
// other machine a peer at its address, allowed its block only.
func TestWireGuardConfig(t *testing.T) {
	keyA, keyB := wgKeys(t)
	pubB, _ := WireGuardPublic(keyB)
	ip := netip.MustParseAddr
	p := Plan{Prefix: "gx", Subnet: netip.MustParsePrefix("10.232.0.0/16"), Block: netip.MustParsePrefix("10.232.1.0/24"),
		Overlay: &Overlay{Mode: OverlayWireGuard, PrivateKey: keyA, Local: ip("172.30.99.1"),
			Peers: []Peer{{Name: "b", Block: netip.MustParsePrefix("10.232.2.0/24"), Underlay: ip("172.30.99.2"), PublicKey: pubB}}}}.Normalize()
	cfg, err := wireguardConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if *cfg.ListenPort != 51820 || cfg.PrivateKey.String() != keyA || !cfg.ReplacePeers || len(cfg.Peers) != 1 {
		t.Fatalf("config %+v", cfg)
	}
	peer := cfg.Peers[0]
	if peer.PublicKey.String() != pubB || peer.Endpoint.String() != "172.30.99.2:51820" || len(peer.AllowedIPs) != 1 || peer.AllowedIPs[0].String() != "10.232.2.0/24" {
		t.Errorf("peer %+v", peer)
	}
	rs := Ruleset(p)
	for _, want := range []string{`oifname "gxwg" tcp flags syn`, `iifname "gxwg" drop`, "udp dport 51820 ip saddr != @machines drop"} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}
	p.Overlay.Peers[0].PublicKey = "nonsense"
	if _, err := wireguardConfig(p); err == nil || !strings.Contains(err.Error(), "machine b") {
		t.Errorf("a peer without a key: %v", err)
	}
}

func TestOverlayRulesRender(t *testing.T) {
	ip := netip.MustParseAddr
	p := Plan{Prefix: "gx", Subnet: netip.MustParsePrefix("10.232.0.0/16"), Block: netip.MustParsePrefix("10.232.1.0/24"),
		Gears:   []Gear{{ID: "a1", App: "X", IP: ip("10.232.1.2")}},
		Remote:  []Gear{{ID: "b1", App: "X", IP: ip("10.232.2.2")}, {ID: "b2", App: "Y", IP: ip("10.232.2.3")}},
		Overlay: &Overlay{Local: ip("172.30.99.1"), Peers: []Peer{{Name: "b", Block: netip.MustParsePrefix("10.232.2.0/24"), Underlay: ip("172.30.99.2")}}}}
	if err := p.Normalize().Validate(); err != nil {
		t.Fatal(err)
	}
	rs := Ruleset(p)
	for _, want := range []string{
		"elements = { 10.232.1.2, 10.232.2.2 }", // app X on both machines
		"elements = { 10.232.1.0, 10.232.2.0 }", // the VXLAN endpoints
		"elements = { 172.30.99.2 }",            // the other machine
		"ip saddr @xapp0 ip daddr @xapp0 accept",
		`iifname "gxvx" drop`,
		"udp dport 4789 ip saddr != @machines drop",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if strings.Contains(rs, "10.232.2.3") {
		t.Errorf("app Y has no gear here, yet its remote gear is in a set:\n%s", rs)
	}
	if Gear := p.Normalize().Gateway(); Gear != ip("10.232.1.1") {
		t.Errorf("gateway %s; want the block's first address", Gear)
	}
	bad := p
	bad.Overlay = &Overlay{Local: ip("172.30.99.1"), Peers: []Peer{{Name: "b", Block: netip.MustParsePrefix("10.232.1.0/24"), Underlay: ip("172.30.99.2")}}}
	if err := bad.Normalize().Validate(); err == nil {
		t.Error("a peer with this machine's block was accepted")
	}
}

// machine is a network namespace standing for a machine, with an
// underlay address on a veth to the other machine.
func machineNetns(t *testing.T, name string) string {
	t.Helper()
	if err := newNamedNetns(name, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamedNetns(name) })
	return name
}

// TestOverlayJoinsBlocksAndKeepsAppsApart runs two machines, each a
// network namespace with its own bridge, gears and rules, joined by the
// VXLAN overlay over a veth: gears of one app reach each other across
// them, gears of different apps do not, a machine reaches every gear (its
// router), no gear reaches the other machine itself; a machine gone from
// the plan takes its route with it.
func TestOverlayJoinsBlocksAndKeepsAppsApart(t *testing.T) {
	t.Run("vxlan", func(t *testing.T) { testOverlay(t, OverlayVXLAN) })
	t.Run("wireguard", func(t *testing.T) {
		needRoot(t)
		if err := WireGuardAvailable(); err != nil {
			t.Skipf("%v: the same routed overlay is tested with VXLAN here; this runs where the kernel has WireGuard", err)
		}
		testOverlay(t, OverlayWireGuard)
	})
}

func testOverlay(t *testing.T, mode string) {
	needRoot(t)
	id := os.Getpid() % 10000
	ma, mb := machineNetns(t, fmt.Sprintf("gma%d", id)), machineNetns(t, fmt.Sprintf("gmb%d", id))
	// The underlay: a veth between the two machines.
	va, vb := fmt.Sprintf("gua%d", id), fmt.Sprintf("gub%d", id)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: va}, PeerName: vb}); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct{ link, ns, addr string }{{va, ma, "172.30.99.1/24"}, {vb, mb, "172.30.99.2/24"}} {
		l, err := netlink.LinkByName(side.link)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := netnsFromName(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetNsFd(l, int(ns)); err != nil {
			t.Fatal(err)
		}
		ns.Close()
		inNetns(t, side.ns, func() {
			l, err := netlink.LinkByName(side.link)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := netlink.ParseAddr(side.addr)
			netlink.AddrAdd(l, a)
			netlink.LinkSetUp(l)
			lo, _ := netlink.LinkByName("lo")
			netlink.LinkSetUp(lo)
		})
	}
	ip := netip.MustParseAddr
	subnet := netip.MustParsePrefix("10.232.0.0/16")
	blockA, blockB := netip.MustParsePrefix("10.232.1.0/24"), netip.MustParsePrefix("10.232.2.0/24")
	pa, pb := fmt.Sprintf("gxa%d", id), fmt.Sprintf("gxb%d", id)
	gearsA := []Gear{{ID: "a1", App: "X", IP: ip("10.232.1.2")}, {ID: "a2", App: "Y", IP: ip("10.232.1.3")}}
	gearsB := []Gear{{ID: "b1", App: "X", IP: ip("10.232.2.2")}, {ID: "b2", App: "Y", IP: ip("10.232.2.3")}, {ID: "b3", App: "Z", IP: ip("10.232.2.4")}}
	keyA, keyB := wgKeys(t)
	pubA, _ := WireGuardPublic(keyA)
	pubB, _ := WireGuardPublic(keyB)
	planA := Plan{Prefix: pa, Subnet: subnet, Block: blockA, Gears: gearsA, Remote: gearsB,
		Overlay: &Overlay{Mode: mode, PrivateKey: keyA, Local: ip("172.30.99.1"), Peers: []Peer{{Name: "b", Block: blockB, Underlay: ip("172.30.99.2"), PublicKey: pubB}}}}
	planB := Plan{Prefix: pb, Subnet: subnet, Block: blockB, Gears: gearsB, Remote: gearsA,
		Overlay: &Overlay{Mode: mode, PrivateKey: keyB, Local: ip("172.30.99.2"), Peers: []Peer{{Name: "a", Block: blockA, Underlay: ip("172.30.99.1"), PublicKey: pubA}}}}
	for _, m := range []struct {
		ns string
		p  Plan
	}{{ma, planA}, {mb, planB}} {
		inNetns(t, m.ns, func() {
			if _, err := Reconcile(m.p); err != nil {
				t.Fatalf("reconcile in %s: %v", m.ns, err)
			}
			again, err := Reconcile(m.p)
			if err != nil || len(again) != 0 {
				t.Errorf("second reconcile in %s changed %q (%v); want nothing", m.ns, again, err)
			}
		})
		t.Cleanup(func() { inNetns(t, m.ns, func() { RemoveAll(m.p.Prefix) }) })
	}
	if mode == OverlayWireGuard {
		inNetns(t, ma, func() {
			peers, err := wireguardPeers(planA.Normalize().WireGuard())
			if err != nil || peers[pubB] != "172.30.99.2:51820 [10.232.2.0/24]" {
				t.Errorf("machine A's WireGuard peers: %v %v", peers, err)
			}
		})
	}
	gearNs := func(p Plan, g string) string { return p.Normalize().NetnsName(g) }
	for _, g := range gearsB {
		listenIn(t, gearNs(planB, g.ID), g.IP.String()+":7000")
	}
	listenIn(t, ma, "0.0.0.0:7100") // machine A's own port
	// More than a packet's worth, gear to gear: the overlay's smaller MTU
	// is met by the MSS clamp, not by a stalled connection.
	var bulk net.Listener
	inNetns(t, gearNs(planB, "b1"), func() { bulk, _ = net.Listen("tcp", "10.232.2.2:7001") })
	go func() {
		for {
			c, err := bulk.Accept()
			if err != nil {
				return
			}
			c.Write(make([]byte, 256<<10))
			c.Close()
		}
	}()
	t.Cleanup(func() { bulk.Close() })
	inNetns(t, gearNs(planA, "a1"), func() {
		c, err := net.DialTimeout("tcp", "10.232.2.2:7001", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if n != 256<<10 {
			t.Errorf("read %d bytes across the overlay (%v); want %d", n, err, 256<<10)
		}
	})
	for _, c := range []struct {
		from, to string
		ok       bool
	}{
		{gearNs(planA, "a1"), "10.232.2.2:7000", true},  // app X to app X across machines
		{gearNs(planA, "a2"), "10.232.2.3:7000", true},  // app Y to app Y
		{gearNs(planA, "a1"), "10.232.2.3:7000", false}, // app X to app Y
		{gearNs(planA, "a1"), "10.232.2.4:7000", false}, // app X to app Z, which has no gear on A
		{ma, "10.232.2.4:7000", true},                   // machine A's router to any gear on B
		{gearNs(planB, "b1"), "10.232.1.0:7100", false}, // a gear of B to machine A itself
		{gearNs(planB, "b1"), "10.232.1.1:7100", false},
	} {
		err := dialFrom(t, c.from, c.to)
		if c.ok && err != nil {
			t.Errorf("%s -> %s: %v; want through", c.from, c.to, err)
		}
		if !c.ok && err == nil {
			t.Errorf("%s -> %s went through; want refused", c.from, c.to)
		}
	}
	// Machine B leaves A's plan: its route goes, nothing else changes.
	inNetns(t, ma, func() {
		gone := planA
		gone.Remote, gone.Overlay = nil, &Overlay{Mode: mode, PrivateKey: keyA, Local: ip("172.30.99.1")}
		var st State
		if _, err := Apply(gone, nil, &st); err != nil {
			t.Fatal(err)
		}
		vx, err := netlink.LinkByName(gone.Normalize().OverlayDev())
		if err != nil {
			t.Fatal(err)
		}
		routes, _ := netlink.RouteList(vx, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.Contains(net.ParseIP("10.232.2.2")) {
				t.Errorf("the route to the gone machine's block stayed: %v", r)
			}
		}
	})
	if err := dialFrom(t, gearNs(planA, "a1"), "10.232.2.2:7000"); err == nil {
		t.Error("a gear reached a machine that left the overlay")
	}
}
