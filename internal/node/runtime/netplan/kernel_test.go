package netplan

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, links and nftables tables (CI runs as root)")
	}
	for _, c := range []string{"nft"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps", c)
		}
	}
}

// inNetns runs f with the calling thread in the named namespace; sockets
// opened by f belong to it.
func inNetns(t *testing.T, name string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	ns, err := netnsFromName(name)
	if strings.HasPrefix(name, "/") { // another tool's, by path
		ns, err = netns.GetFromPath(name)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

func listenIn(t *testing.T, ns, addr string) net.Listener {
	var l net.Listener
	var err error
	inNetns(t, ns, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l
}

func dialFrom(t *testing.T, ns, addr string) error {
	var err error
	inNetns(t, ns, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, rerr := io.ReadAll(c)
			c.Close()
			if rerr == nil && string(b) != "hi" {
				err = fmt.Errorf("read %q", b)
			}
		}
	})
	return err
}

func testPlan(prefix string) Plan {
	ip := netip.MustParseAddr
	return Plan{Prefix: prefix, Subnet: netip.MustParsePrefix("10.231.0.0/24"), HostTCPPorts: []uint16{18080},
		Gears: []Gear{
			{ID: "a1", App: "appA", IP: ip("10.231.0.2")},
			{ID: "a2", App: "appA", IP: ip("10.231.0.3")},
			{ID: "b1", App: "appB", IP: ip("10.231.0.4")},
		}}
}

func TestReconcileIsIdempotentAndIsolates(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("gt%d", os.Getpid()%100000)
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)

	changes, err := Reconcile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) == 0 {
		t.Fatal("first reconcile changed nothing")
	}
	again, err := Reconcile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("second reconcile changed %q; want nothing", again)
	}

	got := normalizeDump(Dump(prefix), prefix, p)
	want := strings.Join([]string{
		"bridge BR up=true addrs=[10.231.0.1/24]",
		"netns PFX-a1 veth-master=BR",
		"  link eth0 up=true addrs=[10.231.0.2/24]",
		"  link lo up=true addrs=[127.0.0.1/8]",
		"  route default via 10.231.0.1",
		"netns PFX-a2 veth-master=BR",
		"  link eth0 up=true addrs=[10.231.0.3/24]",
		"  link lo up=true addrs=[127.0.0.1/8]",
		"  route default via 10.231.0.1",
		"netns PFX-b1 veth-master=BR",
		"  link eth0 up=true addrs=[10.231.0.4/24]",
		"  link lo up=true addrs=[127.0.0.1/8]",
		"  route default via 10.231.0.1",
	}, "\n")
	if !strings.HasPrefix(got, want) {
		t.Errorf("network state:\n%s\nwant it to start with:\n%s", got, want)
	}
	for _, rule := range []string{"ip saddr . ip daddr @pairs accept", "masquerade", "tcp dport 18080 accept"} {
		if !strings.Contains(got, rule) {
			t.Errorf("nftables state lacks %q", rule)
		}
	}

	// Same app: reachable. Other app: cut. Host: only the allowed port.
	listenIn(t, prefix+"-a2", "10.231.0.3:9000")
	listenIn(t, prefix+"-b1", "10.231.0.4:9000")
	hostOK, _ := net.Listen("tcp", "10.231.0.1:18080")
	hostNo, _ := net.Listen("tcp", "10.231.0.1:18081")
	for _, l := range []net.Listener{hostOK, hostNo} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, "hi")
				c.Close()
			}
		}()
		defer l.Close()
	}
	if err := dialFrom(t, prefix+"-a1", "10.231.0.3:9000"); err != nil {
		t.Errorf("gear to a gear of its own app: %v", err)
	}
	start := time.Now()
	if err := dialFrom(t, prefix+"-a1", "10.231.0.4:9000"); err == nil {
		t.Error("gear reached a gear of another app")
	}
	if err := dialFrom(t, prefix+"-a1", "10.231.0.1:18080"); err != nil {
		t.Errorf("gear to the router port: %v", err)
	}
	start = time.Now()
	if err := dialFrom(t, prefix+"-a1", "10.231.0.1:18081"); err == nil {
		t.Error("gear reached a host port that is not allowed")
	} else if time.Since(start) > time.Second {
		t.Errorf("refusal took %s; want a fast reset", time.Since(start))
	}
	// The host (router) reaches every gear.
	if c, err := net.DialTimeout("tcp", "10.231.0.4:9000", 2*time.Second); err != nil {
		t.Errorf("host to gear: %v", err)
	} else {
		c.Close()
	}

	// A gear leaves the plan: its namespace and veth go, nothing else.
	p.Gears = p.Gears[:2]
	changes, err = Reconcile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(changes, "removed netns "+prefix+"-b1") {
		t.Errorf("changes after removing b1: %q", changes)
	}
	if strings.Contains(Dump(prefix), prefix+"-b1") {
		t.Error("b1's namespace is still there")
	}

	if err := RemoveAll(prefix); err != nil {
		t.Fatal(err)
	}
	if got := Dump(prefix); !strings.Contains(got, "absent") || strings.Contains(got, "netns "+prefix) {
		t.Errorf("after RemoveAll:\n%s", got)
	}
	out, _ := exec.Command("ip", "link").Output()
	if strings.Contains(string(out), p.Normalize().Bridge) {
		t.Error("bridge left behind")
	}
}

func normalizeDump(s, prefix string, p Plan) string {
	s = strings.ReplaceAll(s, p.Normalize().Bridge, "BR")
	s = strings.ReplaceAll(s, prefix, "PFX")
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOtherToolsNamespacesDoNotPinOurs: `ip netns add` by anyone on the
// host (which bind-mounts /run/netns recursively and shared) must not make
// Gantry's namespaces undeletable, and namespaces an older Gantry left in
// /run/netns are taken over, not lost.
func TestOtherToolsNamespacesDoNotPinOurs(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("gu%d", os.Getpid()%100000)
	other := prefix + "x-other"
	t.Cleanup(func() { RemoveAll(prefix); exec.Command("ip", "netns", "del", other).Run() })
	p := testPlan(prefix)
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "add", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	// A gear leaves: its namespace goes, with another tool's beside it.
	p2 := p
	p2.Gears = p.Gears[:1]
	if _, err := Reconcile(p2); err != nil {
		t.Fatalf("reconcile after another tool's `ip netns add`: %v", err)
	}
	if got := Namespaces(prefix); len(got) != 1 {
		t.Fatalf("namespaces %v; want one", got)
	}
	if err := RemoveGears(p2, []string{p.Gears[0].ID}); err != nil {
		t.Fatalf("removing a gear: %v", err)
	}

	// An older Gantry's namespace in /run/netns (made by ip netns here) is
	// moved under NetnsDir, with the same namespace.
	legacy := p.NetnsName(p.Gears[0].ID) // removed above
	if out, err := exec.Command("ip", "netns", "add", legacy).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	before, _ := exec.Command("ip", "netns", "exec", legacy, "readlink", "/proc/self/ns/net").Output()
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + legacy); err == nil {
		t.Errorf("/run/netns/%s is still there", legacy)
	}
	after, _ := exec.Command("nsenter", "--net="+NetnsPath(legacy), "readlink", "/proc/self/ns/net").Output()
	if len(before) == 0 || string(after) != string(before) {
		t.Errorf("the moved namespace is %q; want the old one, %q", after, before)
	}
}

// TestPrivateNetworksForbidden: gears reach public destinations through
// the host, but not link-local and private networks (cloud metadata, the
// host's networks, other bridges) unless the operator allows it; DNS to the
// host's resolvers stays allowed.
func TestPrivateNetworksForbidden(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("gp%d", os.Getpid()%100000)
	out := func(name, hostAddr, nsAddr string) string {
		ns := prefix + name
		link := prefix + name
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run(); exec.Command("ip", "link", "del", link).Run() })
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"link", "add", link, "type", "veth", "peer", "name", link + "p"},
			{"link", "set", link + "p", "netns", ns},
			{"addr", "add", hostAddr + "/24", "dev", link},
			{"link", "set", link, "up"},
			{"netns", "exec", ns, "ip", "addr", "add", nsAddr + "/24", "dev", link + "p"},
			{"netns", "exec", ns, "ip", "link", "set", link + "p", "up"},
			{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		} {
			if o, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, o)
			}
		}
		return "/run/netns/" + ns
	}
	private := out("v", "192.168.77.1", "192.168.77.2")
	public := out("u", "198.18.77.1", "198.18.77.2")
	listenIn(t, private, "192.168.77.2:9000")
	listenIn(t, private, "192.168.77.2:53")
	listenIn(t, public, "198.18.77.2:9000")

	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	p.Forbidden, p.Resolvers = PrivateNets, []netip.Addr{netip.MustParseAddr("192.168.77.2")}
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	gear := prefix + "-a1"
	if err := dialFrom(t, gear, "198.18.77.2:9000"); err != nil {
		t.Errorf("gear to a public address: %v", err)
	}
	if err := dialFrom(t, gear, "192.168.77.2:9000"); err == nil {
		t.Error("gear reached a private network")
	}
	if err := dialFrom(t, gear, "192.168.77.2:53"); err != nil {
		t.Errorf("gear to the host's resolver: %v", err)
	}
	// The gear subnet is private too, and stays reachable (its own app).
	listenIn(t, prefix+"-a2", "10.231.0.3:9000")
	if err := dialFrom(t, gear, "10.231.0.3:9000"); err != nil {
		t.Errorf("gear to a gear of its own app: %v", err)
	}
	// --egress-private: the operator allows them.
	p.Forbidden = nil
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(t, gear, "192.168.77.2:9000"); err != nil {
		t.Errorf("with private networks allowed: %v", err)
	}
}

// TestDockerForwardDrop: a host where Docker set the iptables FORWARD
// policy to DROP (with its DOCKER-USER chain), or ufw did (without): the
// gears still reach the outside, and the host its gears; the accepts go
// when the platform's network does. The host's firewall is restored.
func TestDockerForwardDrop(t *testing.T) {
	needRoot(t)
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatal("iptables is not installed: run scripts/install-deps")
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}
	// The host's filter table as it is, put back at the end; meanwhile
	// FORWARD starts plain (accept, no rules, no DOCKER-USER), whatever
	// this host had, and each scenario builds its own.
	restoreFilter := saveFilter(t, ipt)
	t.Cleanup(restoreFilter)
	run("-P", "FORWARD", "ACCEPT")
	run("-F", "FORWARD")
	if exec.Command(ipt, "-S", "DOCKER-USER").Run() == nil {
		run("-F", "DOCKER-USER")
		run("-X", "DOCKER-USER")
	}
	prefix := fmt.Sprintf("gd%d", os.Getpid()%100000)
	out := func(name, hostAddr, nsAddr string) string {
		ns := prefix + name
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run(); exec.Command("ip", "link", "del", ns).Run() })
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"link", "add", ns, "type", "veth", "peer", "name", ns + "p"},
			{"link", "set", ns + "p", "netns", ns},
			{"addr", "add", hostAddr + "/24", "dev", ns},
			{"link", "set", ns, "up"},
			{"netns", "exec", ns, "ip", "addr", "add", nsAddr + "/24", "dev", ns + "p"},
			{"netns", "exec", ns, "ip", "link", "set", ns + "p", "up"},
		} {
			if o, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, o)
			}
		}
		return "/run/netns/" + ns
	}
	outside := out("o", "198.18.78.1", "198.18.78.2")
	listenIn(t, outside, "198.18.78.2:9000")
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	for _, docker := range []bool{true, false} {
		name := map[bool]string{true: "docker", false: "ufw"}[docker]
		if docker {
			run("-N", "DOCKER-USER")
			run("-A", "DOCKER-USER", "-j", "RETURN")
			run("-I", "FORWARD", "-j", "DOCKER-USER")
		}
		run("-P", "FORWARD", "DROP")
		if _, err := Reconcile(p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		listenIn(t, prefix+"-b1", "10.231.0.4:9000")
		if err := dialFrom(t, prefix+"-a1", "198.18.78.2:9000"); err != nil {
			t.Errorf("%s: gear to the outside with FORWARD at DROP: %v", name, err)
		}
		if c, err := net.DialTimeout("tcp", "10.231.0.4:9000", 2*time.Second); err != nil {
			t.Errorf("%s: host to gear: %v", name, err)
		} else {
			c.Close()
		}
		// The platform's network goes: so do its accepts.
		if err := RemoveAll(prefix); err != nil {
			t.Fatal(err)
		}
		for _, chain := range []string{"FORWARD", "DOCKER-USER"} {
			if out, _ := exec.Command(ipt, "-S", chain).Output(); strings.Contains(string(out), "gantry:"+prefix) {
				t.Errorf("%s: accepts left in %s after RemoveAll:\n%s", name, chain, out)
			}
		}
		run("-P", "FORWARD", "ACCEPT")
		if docker {
			run("-D", "FORWARD", "-j", "DOCKER-USER")
			run("-F", "DOCKER-USER")
			run("-X", "DOCKER-USER")
		}
	}
}

// TestIsolationWithoutBrNetfilter: with bridge netfilter off (common on
// hosts without Docker), and on, apps stay apart: the bridge family's own
// table does it, not iptables.
func TestIsolationWithoutBrNetfilter(t *testing.T) {
	needRoot(t)
	const knob = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	old, err := os.ReadFile(knob)
	if err != nil {
		exec.Command("modprobe", "br_netfilter").Run()
		if old, err = os.ReadFile(knob); err != nil {
			t.Skipf("needs bridge netfilter, which this kernel lacks (modprobe br_netfilter did not provide %s), so there is no setting to switch; with it absent, TestReconcileIsIdempotentAndIsolates shows apps kept apart", knob)
		}
	}
	t.Cleanup(func() { os.WriteFile(knob, old, 0o644) })
	prefix := fmt.Sprintf("gn%d", os.Getpid()%100000)
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	listenIn(t, prefix+"-a2", "10.231.0.3:9000")
	listenIn(t, prefix+"-b1", "10.231.0.4:9000")
	for _, v := range []string{"0", "1"} {
		if err := os.WriteFile(knob, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := dialFrom(t, prefix+"-a1", "10.231.0.3:9000"); err != nil {
			t.Errorf("bridge-nf-call-iptables=%s: a gear to its own app's: %v", v, err)
		}
		if err := dialFrom(t, prefix+"-a1", "10.231.0.4:9000"); err == nil {
			t.Errorf("bridge-nf-call-iptables=%s: a gear reached another app's", v)
		}
	}
}

// saveFilter saves the host's iptables filter table and returns what puts
// it back (iptables-restore flushes the table and reloads it).
func saveFilter(t *testing.T, ipt string) func() {
	t.Helper()
	saved, err := exec.Command(ipt+"-save", "-t", "filter").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return func() {
		cmd := exec.Command(ipt+"-restore", "-T", "filter")
		cmd.Stdin = strings.NewReader(string(saved))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("putting the host's iptables filter table back: %v: %s", err, out)
		}
	}
}

// Each gear starts with its neighbours known both ways (the host's bridge
// has the gear's MAC, the gear the gateway's), so its first connection
// never waits for an ARP exchange that may be lost.
func TestNeighboursKnownFromTheStart(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("gn%d", os.Getpid()%100000)
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	p = p.Normalize()
	br, err := netlink.LinkByName(p.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	hostNeigh, err := netlink.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Gears {
		ns, err := netnsFromName(p.NetnsName(g.ID))
		if err != nil {
			t.Fatal(err)
		}
		nh, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		eth0, err := nh.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range hostNeigh {
			if n.IP.Equal(net.IP(g.IP.AsSlice())) && n.HardwareAddr.String() == eth0.Attrs().HardwareAddr.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("the bridge has no neighbour %s -> %s: %v", g.IP, eth0.Attrs().HardwareAddr, hostNeigh)
		}
		gwNeigh, _ := nh.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
		found = false
		for _, n := range gwNeigh {
			if n.IP.Equal(net.IP(p.Gateway().AsSlice())) && n.HardwareAddr.String() == p.BridgeMAC().String() {
				found = true
			}
		}
		if !found {
			t.Errorf("gear %s has no neighbour for the gateway: %v", g.ID, gwNeigh)
		}
		nh.Close()
		ns.Close()
	}
}

// A gear's address comes last, after the rules: a namespaced gear's PID 1
// waits for it before it starts the app, so an app never runs in a
// network whose rules failed to load. A parked gear (a standby) has none.
func TestAddressComesAfterTheRules(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("ga%d", os.Getpid()%100000)
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	g := Gear{ID: "late", App: "app-late", IP: netip.MustParseAddr("10.231.0.77")}
	p.Gears = append(p.Gears, g)
	if err := EnsureNetns(p, g.ID); err != nil {
		t.Fatal(err)
	}
	addrs := func() []netlink.Addr {
		ns, err := netnsFromName(p.Normalize().NetnsName(g.ID))
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		nh, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer nh.Close()
		l, err := nh.LinkByName("eth0")
		if err != nil {
			return nil // no link yet: no address either
		}
		a, _ := nh.AddrList(l, netlink.FAMILY_V4)
		return a
	}
	if a := addrs(); len(a) != 0 {
		t.Fatalf("an empty namespace has addresses: %v", a)
	}
	// nft fails: the link is made, the address is not given.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nft"), []byte("#!/bin/sh\necho refused >&2\nexit 1\n"), 0o755)
	path := os.Getenv("PATH")
	t.Setenv("PATH", bin+":"+path)
	var st State
	if _, err := Apply(p, []string{g.ID}, &st); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Apply with nft failing: %v", err)
	}
	if a := addrs(); len(a) != 0 {
		t.Fatalf("the gear got its address though its rules failed: %v", a)
	}
	t.Setenv("PATH", path)
	if _, err := Apply(p, []string{g.ID}, &st); err != nil {
		t.Fatal(err)
	}
	if a := addrs(); len(a) != 1 || a[0].IP.String() != g.IP.String() {
		t.Fatalf("after the rules: %v; want %s", a, g.IP)
	}
	// Parked (a standby gear): the address goes, whatever does the work —
	// a full reconcile (a server starting again) or an apply; unparked, a
	// gear's apply gives it back.
	p.Gears[len(p.Gears)-1].Parked = true
	if _, err := Reconcile(p); err != nil {
		t.Fatal(err)
	}
	if a := addrs(); len(a) != 0 {
		t.Fatalf("a parked gear has addresses after a reconcile: %v", a)
	}
	st = State{}
	if _, err := Apply(p, []string{g.ID}, &st); err != nil {
		t.Fatal(err)
	}
	if a := addrs(); len(a) != 0 {
		t.Fatalf("a parked gear has addresses after an apply: %v", a)
	}
	p.Gears[len(p.Gears)-1].Parked = false
	if _, err := Apply(p, []string{g.ID}, &st); err != nil {
		t.Fatal(err)
	}
	if a := addrs(); len(a) != 1 || a[0].IP.String() != g.IP.String() {
		t.Fatalf("unparked: %v; want %s", a, g.IP)
	}
}

// A gear coming or going changes the pairs set's elements, not the
// ruleset, and the isolation holds; a server that starts again with other
// gears than the kernel's pairs (added since the last full load) reloads.
func TestGearPairsIncremental(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("gp%d", os.Getpid()%100000)
	t.Cleanup(func() { RemoveAll(prefix) })
	p := testPlan(prefix)
	var st State
	if _, err := Apply(p, []string{"a1", "a2", "b1"}, &st); err != nil {
		t.Fatal(err)
	}
	b2 := Gear{ID: "b2", App: "appB", IP: netip.MustParseAddr("10.231.0.9")}
	p.Gears = append(p.Gears, b2)
	changes, err := Apply(p, []string{"b2"}, &st)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(changes, "updated the gear pairs of "+prefix) || slices.ContainsFunc(changes, func(c string) bool { return strings.HasPrefix(c, "applied nftables ruleset") }) {
		t.Errorf("adding a gear: %q; want its pairs added, no reload", changes)
	}
	listenIn(t, prefix+"-b1", "10.231.0.4:9001")
	listenIn(t, prefix+"-a1", "10.231.0.2:9001")
	if err := dialFrom(t, prefix+"-b2", "10.231.0.4:9001"); err != nil {
		t.Errorf("the new gear to a gear of its own app: %v", err)
	}
	if err := dialFrom(t, prefix+"-b2", "10.231.0.2:9001"); err == nil {
		t.Error("the new gear reached a gear of another app")
	}
	// A restart with the plan of the last full load: the kernel has b2's
	// pairs too, and they must go.
	p.Gears = p.Gears[:len(p.Gears)-1]
	var fresh State
	changes, err = Apply(p, nil, &fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(changes, func(c string) bool { return strings.HasPrefix(c, "applied nftables ruleset") }) {
		t.Errorf("a restart with other pairs than the kernel's: %q; want a reload", changes)
	}
	out, _ := exec.Command("nft", "list", "set", "bridge", prefix, "pairs").Output()
	if strings.Contains(string(out), "10.231.0.9") {
		t.Errorf("the gone gear's pairs are still there:\n%s", out)
	}
}
