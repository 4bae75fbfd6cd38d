package netplan

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// Reconcile makes the kernel match the plan: bridge, forwarding, one netns
// with a veth and address per gear, gear namespaces not in the plan
// removed, and the nftables ruleset. It returns what it changed.
func Reconcile(p Plan) (changes []string, err error) {
	forwardChecked.Delete(p.Normalize().Prefix) // a full reconcile looks again
	p, changed, br, err := begin(p, &changes)
	if err != nil {
		return changes, err
	}
	// One step failing never skips the others: every gear, every
	// removal and the rules are tried, and the errors come back together.
	var errs []error
	want := map[string]bool{}
	for _, g := range p.Gears {
		want[p.NetnsName(g.ID)] = true
		if err := ensureGear(p, br, g, changed); err != nil {
			errs = append(errs, fmt.Errorf("gear %s: %w", g.ID, err))
		}
	}
	for _, name := range Namespaces(p.Prefix) {
		if !want[name] {
			if err := removeGear(p, strings.TrimPrefix(name, p.Prefix+"-")); err != nil {
				errs = append(errs, err)
				continue
			}
			changed("removed netns %s", name)
		}
	}
	if err := ensureOverlay(p, changed); err != nil {
		errs = append(errs, err)
	}
	if err := ensureHostRoutes(p, br, changed); err != nil {
		errs = append(errs, err)
	}
	if err := ensureRules(p, changed, nil); err != nil {
		errs = append(errs, err)
	}
	for _, g := range p.Gears {
		if err := ensureGearAddr(p, g, changed); err != nil {
			errs = append(errs, fmt.Errorf("gear %s: %w", g.ID, err))
		}
	}
	return changes, errors.Join(errs...)
}

// State is what Apply knows the kernel has, so that unchanged parts cost
// nothing: the ruleset's hash and the overlay's key ("" when unknown:
// then the kernel is asked).
type State struct {
	Rules string
	// Structure is the hash of that ruleset without its gears, Pairs its
	// pairs: a plan that differs only in its gears is applied by adding
	// and deleting pairs (no overlay: its sets follow the gears too).
	Structure string
	Pairs     map[Pair]bool
	Overlay   string
	// HostRoutes names the gears outside the block that have host routes.
	HostRoutes string
}

// Apply is the incremental form of Reconcile for the hot path (a gear
// starting): it ensures the bridge, the given gears and the rules, and
// removes nothing but the routes of machines gone. applied remembers
// what the kernel has.
func Apply(p Plan, gearIDs []string, applied *State) (changes []string, err error) {
	p, changed, br, err := begin(p, &changes)
	if err != nil {
		return changes, err
	}
	want := map[string]bool{}
	for _, id := range gearIDs {
		want[id] = true
	}
	for _, g := range p.Gears {
		if want[g.ID] {
			if err := ensureGear(p, br, g, changed); err != nil {
				return changes, fmt.Errorf("gear %s: %w", g.ID, err)
			}
		}
	}
	defer func() {
		// The addresses last, once the rules are in (see ensureGearAddr).
		for _, g := range p.Gears {
			if want[g.ID] && err == nil {
				if err = ensureGearAddr(p, g, changed); err != nil {
					err = fmt.Errorf("gear %s: %w", g.ID, err)
				}
			}
		}
	}()
	if key := overlayKey(p); applied.Overlay != key {
		applied.Overlay = ""
		if err := ensureOverlay(p, changed); err != nil {
			return changes, err
		}
		applied.Overlay = key
	}
	if key := hostRoutesKey(p); applied.HostRoutes != key {
		applied.HostRoutes = ""
		if err := ensureHostRoutes(p, br, changed); err != nil {
			return changes, err
		}
		applied.HostRoutes = key
	}
	return changes, ensureRules(p, changed, applied)
}

// RemoveGears deletes gears' namespaces and veths (the rules follow with
// the next Apply or Reconcile).
func RemoveGears(p Plan, ids []string) error {
	p = p.Normalize()
	var errs []error
	for _, id := range ids {
		errs = append(errs, removeGear(p, id))
	}
	return errors.Join(errs...)
}

// begin normalises and validates a plan, gives a recorder of changes, and
// makes what every gear needs (the bridge, forwarding).
func begin(p Plan, changes *[]string) (Plan, func(string, ...any), netlink.Link, error) {
	p = p.Normalize()
	if err := p.Validate(); err != nil {
		return p, nil, nil, err
	}
	changed := func(format string, args ...any) { *changes = append(*changes, fmt.Sprintf(format, args...)) }
	if err := ensureNetnsDir(p.Prefix); err != nil {
		return p, nil, nil, fmt.Errorf("the namespace directory: %w", err)
	}
	br, err := ensureBase(p, changed)
	return p, changed, br, err
}

// ensureBase makes what every gear needs: the bridge and IP forwarding.
func ensureBase(p Plan, changed func(string, ...any)) (netlink.Link, error) {
	br, err := ensureBridge(p, changed)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", p.Bridge, err)
	}
	if err := ensureForwardAccept(p, changed, false); err != nil {
		return nil, err
	}
	return br, ensureSysctl("/proc/sys/net/ipv4/ip_forward", "1", changed)
}

// RemoveAll deletes everything of the prefix: gear namespaces, the bridge,
// the nftables tables.
func RemoveAll(prefix string) error {
	p := Plan{Prefix: prefix}.Normalize()
	var errs []error
	ensureNetnsDir(p.Prefix) // moves what an older version left in /run/netns
	removeForwardAccept(p)
	for _, name := range Namespaces(p.Prefix) {
		errs = append(errs, removeGear(p, strings.TrimPrefix(name, p.Prefix+"-")))
	}
	if l, err := netlink.LinkByName(p.Bridge); err == nil {
		errs = append(errs, netlink.LinkDel(l))
	}
	for _, fam := range []string{"bridge", "ip"} {
		exec.Command("nft", "delete", "table", fam, p.Prefix).Run()
	}
	return errors.Join(errs...)
}

// Namespaces lists the gear namespaces of prefix.
func Namespaces(prefix string) []string {
	entries, _ := os.ReadDir(NetnsDir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func ensureBridge(p Plan, changed func(string, ...any)) (netlink.Link, error) {
	// A bridge without an address of its own takes the lowest of its
	// ports' and changes it when that port goes: the gears' ARP entries
	// for the gateway then point nowhere for seconds (outbound traffic of
	// every gear stalls when one gear stops). A fixed address avoids it.
	mac := p.BridgeMAC()
	l, err := netlink.LinkByName(p.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: p.Bridge, HardwareAddr: mac}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, err
		}
		changed("created bridge %s", p.Bridge)
		if l, err = netlink.LinkByName(p.Bridge); err != nil {
			return nil, err
		}
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, err
		}
		changed("address %s on %s", mac, p.Bridge)
	}
	gw := &netlink.Addr{IPNet: ipnet(p.Gateway(), p.Block.Bits())}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	if !hasAddr(addrs, gw) {
		if err := netlink.AddrReplace(l, gw); err != nil {
			return nil, err
		}
		changed("address %s on %s", gw.IPNet, p.Bridge)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, err
		}
		changed("set %s up", p.Bridge)
	}
	return l, nil
}

func ensureSysctl(path, value string, changed func(string, ...any)) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s: %w", path, err)
	}
	changed("%s = %s", path, value)
	return nil
}

func ensureGear(p Plan, br netlink.Link, g Gear, changed func(string, ...any)) error {
	name := p.NetnsName(g.ID)
	if _, err := os.Stat(NetnsPath(name)); err != nil {
		if err := newNamedNetns(p.Prefix, name); err != nil {
			return fmt.Errorf("creating netns %s: %w", name, err)
		}
		changed("created netns %s", name)
	}
	ns, err := netnsFromName(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nh.Close()

	hostName := p.HostVeth(g.ID)
	host, err := netlink.LinkByName(hostName)
	if _, inErr := nh.LinkByName("eth0"); err != nil || inErr != nil {
		// Either side missing: rebuild the pair.
		if host != nil {
			netlink.LinkDel(host)
		}
		if l, err := nh.LinkByName("eth0"); err == nil {
			nh.LinkDel(l)
		}
		// The peer is made in the gear's namespace, as eth0: moving a
		// link between namespaces waits for an RCU grace period (~20 ms
		// here, on every gear's start).
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MasterIndex: br.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth %s: %w", hostName, err)
		}
		changed("created veth %s <-> %s/eth0", hostName, name)
		if host, err = netlink.LinkByName(hostName); err != nil {
			return err
		}
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
			return err
		}
		changed("attached %s to %s", hostName, p.Bridge)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(host); err != nil {
			return err
		}
		changed("set %s up", hostName)
	}
	// Inside: lo and eth0 up, the gear's address, a default route.
	for _, ifname := range []string{"lo", "eth0"} {
		l, err := nh.LinkByName(ifname)
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := nh.LinkSetUp(l); err != nil {
				return err
			}
			changed("set %s up in %s", ifname, name)
		}
	}
	// Both neighbours known from the start: the host's bridge knows the
	// gear's MAC, the gear the gateway's. Without them the first exchange
	// waits for ARP, and when that first request was lost (as happened in
	// some server lives, every gear start) the gear stayed unreachable
	// until the neighbour timer retried, 0.8-1 s later. The entries are
	// REACHABLE, not permanent: the kernel re-checks and ages them, and a
	// new gear with the same address replaces its own.
	if eth0, err := nh.LinkByName("eth0"); err == nil {
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_REACHABLE,
			IP: net.IP(g.IP.AsSlice()), HardwareAddr: eth0.Attrs().HardwareAddr}); err != nil {
			return fmt.Errorf("host neighbour of %s: %w", g.IP, err)
		}
		if err := nh.NeighSet(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_REACHABLE,
			IP: net.IP(p.Gateway().AsSlice()), HardwareAddr: p.BridgeMAC()}); err != nil {
			return fmt.Errorf("gateway neighbour in %s: %w", name, err)
		}
	}
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	gw := net.IP(p.Gateway().AsSlice())
	for _, r := range routes {
		if isDefault(r) && r.Gw.Equal(gw) {
			return nil
		}
	}
	eth0, _ := nh.LinkByName("eth0")
	// On-link whatever the gear's mask: a gear whose address is outside
	// the machine's block (from before it joined a cluster) reaches the
	// gateway too.
	if err := nh.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		return fmt.Errorf("default route in %s: %w", name, err)
	}
	changed("default route via %s in %s", gw, name)
	return nil
}

// handleIn is a netlink handle in the named namespace.
func handleIn(name string) (*netlink.Handle, error) {
	ns, err := netnsFromName(name)
	if err != nil {
		return nil, err
	}
	defer ns.Close() // the handle's sockets are made in it: it may go
	return netlink.NewHandleAt(ns)
}

// ensureGearAddr gives a gear's eth0 its address (and only it; none to a
// parked gear). It comes last: a namespaced gear's PID 1 waits for it
// before it starts the app (gear-init --wait-addr), so the app never runs
// before its rules.
func ensureGearAddr(p Plan, g Gear, changed func(string, ...any)) error {
	name := p.NetnsName(g.ID)
	nh, err := handleIn(name)
	if err != nil {
		return err
	}
	defer nh.Close()
	l, err := nh.LinkByName("eth0")
	if err != nil {
		return err
	}
	want := &netlink.Addr{IPNet: ipnet(g.IP, p.Block.Bits())}
	addrs, err := nh.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if g.Parked || a.IPNet.String() != want.IPNet.String() {
			nh.AddrDel(l, &a)
			changed("removed stale address %s in %s", a.IPNet, name)
		}
	}
	if !g.Parked && !hasAddr(addrs, want) {
		if err := nh.AddrAdd(l, want); err != nil {
			return err
		}
		changed("address %s in %s", want.IPNet, name)
	}
	return nil
}

// EnsureNetns makes a gear's network namespace, empty: its container can
// be made in it while Apply gives it its link, rules and address.
func EnsureNetns(p Plan, gearID string) error {
	p = p.Normalize()
	name := p.NetnsName(gearID)
	if _, err := os.Stat(NetnsPath(name)); err == nil {
		return nil
	}
	if err := newNamedNetns(p.Prefix, name); err != nil {
		return fmt.Errorf("creating netns %s: %w", name, err)
	}
	return nil
}

func removeGear(p Plan, gearID string) error {
	if l, err := netlink.LinkByName(p.HostVeth(gearID)); err == nil {
		netlink.LinkDel(l)
	}
	err := deleteNamedNetns(p.NetnsName(gearID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// hostRoutesKey names the gears outside the block (in plan order), so a
// gear start does not list the bridge's routes when they did not change.
func hostRoutesKey(p Plan) string {
	key := "routes"
	for _, g := range p.Gears {
		if !p.Block.Contains(g.IP) {
			key += " " + g.IP.String()
		}
	}
	return key
}

// ensureHostRoutes routes each gear whose address is outside the
// machine's block to the bridge (a host route), and removes the host
// routes of gears gone.
func ensureHostRoutes(p Plan, br netlink.Link, changed func(string, ...any)) error {
	want := map[string]bool{}
	for _, g := range p.Gears {
		if !p.Block.Contains(g.IP) {
			want[g.IP.String()+"/32"] = true
		}
	}
	routes, err := netlink.RouteList(br, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.To4() == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones != 32 {
			continue
		}
		if !want[r.Dst.String()] {
			netlink.RouteDel(&r)
			changed("removed host route %s", r.Dst)
			continue
		}
		have[r.Dst.String()] = true
	}
	for _, g := range p.Gears {
		if key := g.IP.String() + "/32"; want[key] && !have[key] {
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: ipnet(g.IP, 32), Scope: netlink.SCOPE_LINK,
				Src: net.IP(p.Gateway().AsSlice())}); err != nil {
				return fmt.Errorf("host route to gear %s outside the block: %w", g.IP, err)
			}
			changed("host route %s to %s", key, p.Bridge)
		}
	}
	return nil
}

var hashRE = regexp.MustCompile(`comment "gantry:([0-9a-f]+)"`)

func ensureRules(p Plan, changed func(string, ...any), applied *State) error {
	want := Ruleset(p)
	wantHash := hashRE.FindStringSubmatch(want)[1]
	pairs := Pairs(p)
	if applied != nil && applied.Rules == wantHash {
		return nil
	}
	structure := structureOf(p)
	// Only the gears changed: their pairs, without reloading the rules
	// (a reload costs the kernel a commit of both tables, ~20 ms).
	if applied != nil && applied.Rules != "" && p.Overlay == nil && applied.Structure == structure {
		if err := updatePairs(p, applied.Pairs, pairs); err == nil {
			applied.Rules, applied.Pairs = wantHash, pairSet(pairs)
			changed("updated the gear pairs of %s", p.Prefix)
			return nil
		}
	}
	ok := applied == nil || applied.Rules == ""
	if ok {
		// The kernel's tables carry the hash of the ruleset they were
		// loaded with; their pairs may have changed since, so they are
		// compared too.
		for _, fam := range []string{"bridge", "ip"} {
			out, err := exec.Command("nft", "list", "table", fam, p.Prefix).Output()
			m := hashRE.FindSubmatch(out)
			if err != nil || m == nil || string(m[1]) != wantHash || fam == "bridge" && !samePairs(out, pairs) {
				ok = false
			}
		}
	}
	if ok {
		if applied != nil {
			applied.Rules, applied.Structure, applied.Pairs = wantHash, structure, pairSet(pairs)
		}
		return nil
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(want)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if applied != nil {
			*applied = State{Overlay: applied.Overlay, HostRoutes: applied.HostRoutes}
		}
		return fmt.Errorf("applying nftables rules: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if applied != nil {
		applied.Rules, applied.Structure, applied.Pairs = wantHash, structure, pairSet(pairs)
	}
	changed("applied nftables ruleset %s", wantHash)
	return nil
}

// structureOf is the hash of p's ruleset without its gears ("" with an
// overlay, whose sets follow the gears).
func structureOf(p Plan) string {
	if p.Overlay != nil {
		return ""
	}
	p.Gears = nil
	return hashRE.FindStringSubmatch(Ruleset(p))[1]
}

func pairSet(ps []Pair) map[Pair]bool {
	m := make(map[Pair]bool, len(ps))
	for _, q := range ps {
		m[q] = true
	}
	return m
}

// updatePairs adds and deletes pairs in one nft transaction.
func updatePairs(p Plan, have map[Pair]bool, want []Pair) error {
	var add, del []Pair
	wanted := pairSet(want)
	for _, q := range want {
		if !have[q] {
			add = append(add, q)
		}
	}
	for q := range have {
		if !wanted[q] {
			del = append(del, q)
		}
	}
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	var b strings.Builder
	if len(add) > 0 {
		fmt.Fprintf(&b, "add element bridge %s pairs { %s }\n", p.Normalize().Prefix, joinPairs(add))
	}
	if len(del) > 0 {
		fmt.Fprintf(&b, "delete element bridge %s pairs { %s }\n", p.Normalize().Prefix, joinPairs(del))
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

var pairRE = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+\.\d+\.\d+\.\d+)`)

// samePairs says whether a listed bridge table's pairs are want.
func samePairs(listing []byte, want []Pair) bool {
	got := map[Pair]bool{}
	for _, m := range pairRE.FindAllSubmatch(listing, -1) {
		a, err1 := netip.ParseAddr(string(m[1]))
		b, err2 := netip.ParseAddr(string(m[2]))
		if err1 != nil || err2 != nil {
			return false
		}
		got[Pair{a, b}] = true
	}
	if len(got) != len(want) {
		return false
	}
	for _, q := range want {
		if !got[q] {
			return false
		}
	}
	return true
}

// Dump prints the network state of the prefix as text, for tests and
// `gantry admin` debugging: bridge, each gear namespace's addresses and
// routes, and the nftables tables.
func Dump(prefix string) string {
	p := Plan{Prefix: prefix}.Normalize()
	var b strings.Builder
	if l, err := netlink.LinkByName(p.Bridge); err == nil {
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		fmt.Fprintf(&b, "bridge %s up=%v addrs=%s\n", p.Bridge, l.Attrs().Flags&net.FlagUp != 0, addrList(addrs))
	} else {
		fmt.Fprintf(&b, "bridge %s absent\n", p.Bridge)
	}
	for _, name := range Namespaces(p.Prefix) {
		id := strings.TrimPrefix(name, p.Prefix+"-")
		host, err := netlink.LinkByName(p.HostVeth(id))
		master := "none"
		if err == nil && host.Attrs().MasterIndex > 0 {
			if m, err := netlink.LinkByIndex(host.Attrs().MasterIndex); err == nil {
				master = m.Attrs().Name
			}
		}
		fmt.Fprintf(&b, "netns %s veth-master=%s\n", name, master)
		ns, err := netnsFromName(name)
		if err != nil {
			continue
		}
		nh, err := netlink.NewHandleAt(ns)
		if err == nil {
			links, _ := nh.LinkList()
			sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Name < links[j].Attrs().Name })
			for _, l := range links {
				addrs, _ := nh.AddrList(l, netlink.FAMILY_V4)
				fmt.Fprintf(&b, "  link %s up=%v addrs=%s\n", l.Attrs().Name, l.Attrs().Flags&net.FlagUp != 0, addrList(addrs))
			}
			routes, _ := nh.RouteList(nil, netlink.FAMILY_V4)
			for _, r := range routes {
				if isDefault(r) {
					fmt.Fprintf(&b, "  route default via %s\n", r.Gw)
				}
			}
			nh.Close()
		}
		ns.Close()
	}
	for _, fam := range []string{"bridge", "ip"} {
		out, err := exec.Command("nft", "list", "table", fam, p.Prefix).Output()
		if err != nil {
			fmt.Fprintf(&b, "nft table %s %s absent\n", fam, p.Prefix)
			continue
		}
		b.Write(out)
	}
	return b.String()
}

func addrList(addrs []netlink.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.IPNet.String())
	}
	sort.Strings(s)
	return "[" + strings.Join(s, " ") + "]"
}

func hasAddr(addrs []netlink.Addr, want *netlink.Addr) bool {
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			return true
		}
	}
	return false
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

func isDefault(r netlink.Route) bool { return r.Dst == nil || r.Dst.String() == "0.0.0.0/0" }
