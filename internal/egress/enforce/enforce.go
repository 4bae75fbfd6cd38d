package enforce

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/dns"
	"github.com/gantry-paas/gantry/internal/egress/policy"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"golang.org/x/sys/unix"
)

// hostCache keeps the addresses of hostname rules until their DNS TTL
// runs out (resolved through the platform's upstreams, which give TTLs;
// without them, Go's resolver and hostTTL).
type hostCache struct {
	mu    sync.Mutex
	addrs map[string]hostAddrs
}

type hostAddrs struct {
	addrs   []netip.Addr
	expires time.Time
}

const (
	hostTTL    = 30 * time.Second // when the TTL is not known
	hostMinTTL = 5 * time.Second  // how often the refresh loop looks
	hostMaxTTL = 10 * time.Minute
)

func (c *hostCache) lookup(upstreams []string, host string) []netip.Addr {
	c.mu.Lock()
	e, ok := c.addrs[host]
	c.mu.Unlock()
	now := time.Now()
	if ok && now.Before(e.expires) {
		return e.addrs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var addrs []netip.Addr
	ttl := hostTTL
	var err error
	if len(upstreams) > 0 {
		var answers []dns.Answer
		answers, err = dns.Lookup(ctx, upstreams, host)
		for i, a := range answers {
			if i == 0 || a.TTL < ttl {
				ttl = a.TTL
			}
			if !slices.Contains(addrs, a.Addr) {
				addrs = append(addrs, a.Addr)
			}
		}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
	}
	if err != nil {
		ttl = hostMinTTL // try again soon
		if ok {
			addrs = e.addrs // keep the last answer while DNS fails
		}
	}
	c.mu.Lock()
	if c.addrs == nil {
		c.addrs = map[string]hostAddrs{}
	}
	c.addrs[host] = hostAddrs{addrs: addrs, expires: now.Add(min(max(ttl, hostMinTTL), hostMaxTTL))}
	c.mu.Unlock()
	return addrs
}

// Policy is an app's outbound policy: its rules, then the platform
// default.
func (e *Enforcer) Policy(app *store.App) (policy.Policy, error) {
	p := policy.Policy{Default: e.o.Default, Blocked: app.EgressBlocked}
	if p.Default == "" {
		p.Default = policy.Allow
	}
	for _, r := range app.Egress {
		rule, err := policy.Parse(r.Action, r.Rule, e.Labels())
		if err != nil {
			return p, err
		}
		p.Rules = append(p.Rules, rule)
	}
	via, err := e.via(app.EgressRouter)
	p.Via = via
	return p, err
}

// RouterPorts are the egress router's fixed ports on the gateway.
type RouterPorts struct {
	Proxy     uint16
	Redirects []uint16 // redirect k of an app arrives on Redirects[k]
}

// RouterPorts says where the router listens (nil: no router).
func (e *Enforcer) RouterPorts() *RouterPorts { return e.o.Router }

// via binds an app that uses the egress router to it: the router's
// ports that the app uses, and its redirects.
func (e *Enforcer) via(r *store.EgressRouter) (*policy.Via, error) {
	if r.Empty() || e.o.Router == nil {
		return nil, nil
	}
	ports := e.o.Router
	v := &policy.Via{}
	if r.Proxy {
		v.Ports = append(v.Ports, ports.Proxy)
	}
	for k, rd := range r.Redirects {
		if k >= len(ports.Redirects) {
			return nil, fmt.Errorf("at most %d redirects per app", len(ports.Redirects))
		}
		m, err := policy.ParseRedirect(rd.Match)
		if err != nil {
			return nil, err
		}
		v.Ports = append(v.Ports, ports.Redirects[k])
		v.Redirects = append(v.Redirects, policy.NAT{Match: m, ToPort: ports.Redirects[k]})
	}
	for _, t := range r.TCP {
		v.Ports = append(v.Ports, uint16(t.Port))
	}
	return v, nil
}

func (e *Enforcer) Labels() policy.Labels {
	if e.o.Labels != nil {
		return e.o.Labels
	}
	return policy.DefaultLabels
}

// ResolveHosts resolves the policy's hostname rules.
func (e *Enforcer) ResolveHosts(p policy.Policy) map[string][]netip.Addr {
	hosts := map[string][]netip.Addr{}
	for _, r := range p.Rules {
		if r.Host != "" && !r.Wildcard {
			hosts[r.Host] = e.hosts.lookup(e.o.DNSUpstreams, r.Host)
		}
	}
	if p.Via != nil {
		for _, n := range p.Via.Redirects {
			if n.Match.Host != "" {
				hosts[n.Match.Host] = e.hosts.lookup(e.o.DNSUpstreams, n.Match.Host)
			}
		}
	}
	return hosts
}

// LookupHost resolves a name as the platform does for hostname rules.
func (e *Enforcer) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if len(e.o.DNSUpstreams) == 0 {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
		return addrs, err
	}
	answers, err := dns.Lookup(ctx, e.o.DNSUpstreams, host)
	var addrs []netip.Addr
	for _, ans := range answers {
		if !slices.Contains(addrs, ans.Addr) {
			addrs = append(addrs, ans.Addr)
		}
	}
	return addrs, err
}

// learnedCache remembers which learned addresses are in which gear's
// sets and until when, so that repeated lookups cost no nft run.
type learnedCache struct {
	mu    sync.Mutex
	until map[string]time.Time // gear ID, set, address -> element expiry
}

// learnTimeout is how long an address an answer gave stays allowed: its
// TTL (at least a minute), and two minutes more for clients that keep
// an answer a little past it. Connections opened meanwhile live on.
func learnTimeout(ttl time.Duration) time.Duration {
	return max(ttl, time.Minute) + 2*time.Minute
}

// LearnDNS lets the addresses of a DNS answer through the policy
// of the gear that asked, for each hostname rule that covers one of the
// answer's names. It returns once they are in the gear's sets, before the
// forwarder hands the answer to the gear.
func (e *Enforcer) LearnDNS(src netip.Addr, names []string, answers []dns.Answer) {
	// Every namespaced gear's DNS goes through the forwarder: the gear
	// and its app come from an index rebuilt when the store changes, not
	// from a store scan per answer.
	gear, app, ok := e.gearByAddr(src)
	if !ok {
		return
	}
	pol, err := e.Policy(&app)
	if err != nil || pol.Via != nil {
		return
	}
	now := time.Now()
	var script strings.Builder
	var added []string
	e.learned.mu.Lock()
	if e.learned.until == nil {
		e.learned.until = map[string]time.Time{}
	}
	for _, host := range pol.HostRules() {
		hit := false
		for _, n := range names {
			hit = hit || policy.MatchHost(host, n)
		}
		if !hit {
			continue
		}
		for _, ans := range answers {
			set := policy.LearnedSet(host, ans.Addr.Is6())
			key := gear.ID + " " + set + " " + ans.Addr.String()
			timeout := learnTimeout(ans.TTL)
			if until, ok := e.learned.until[key]; ok && until.Sub(now) > timeout/2 {
				continue // in the set for long enough
			}
			// add, delete, add: a fresh timeout whether or not it was there.
			elem := fmt.Sprintf("inet %s %s { %s", policy.Table, set, ans.Addr)
			fmt.Fprintf(&script, "add element %s timeout %ds }\ndelete element %s }\nadd element %s timeout %ds }\n",
				elem, int(timeout.Seconds()), elem, elem, int(timeout.Seconds()))
			e.learned.until[key] = now.Add(timeout)
			added = append(added, key)
		}
	}
	for k, until := range e.learned.until {
		if until.Before(now) {
			delete(e.learned.until, k)
		}
	}
	e.learned.mu.Unlock()
	if script.Len() == 0 {
		return
	}
	if err := applyInNetns(e.o.Network.Normalize().NetnsName(gear.ID), script.String()); err != nil {
		e.log.Warn("letting a DNS answer through the egress policy", "app", app.FullName(), "gear", gear.ID, "names", names, "err", err)
		e.learned.mu.Lock()
		for _, k := range added {
			delete(e.learned.until, k)
		}
		e.learned.mu.Unlock()
		return
	}
	e.log.Debug("egress learned", "app", app.FullName(), "gear", gear.ID, "names", names, "answers", len(answers))
}

// gearIndex maps namespaced gears' addresses to the gear and its app, as
// of a store revision.
type gearIndex struct {
	mu   sync.Mutex
	rev  int64
	gear map[string]store.Gear // by IP
	apps map[string]store.App  // by key
}

// gearByAddr is the running namespaced gear with address src and its
// app.
func (e *Enforcer) gearByAddr(src netip.Addr) (store.Gear, store.App, bool) {
	x := &e.byAddr
	x.mu.Lock()
	defer x.mu.Unlock()
	if rev := e.o.Store.Rev(); x.gear == nil || x.rev != rev {
		gears := map[string]store.Gear{}
		apps := map[string]store.App{}
		err := e.o.Store.View(func(tx *store.Tx) error {
			all, err := store.ListGears(tx)
			if err != nil {
				return err
			}
			for _, g := range all {
				if g.State == store.GearStopped || g.Isolation != namespaces {
					continue
				}
				gears[g.IP] = g
				if _, ok := apps[g.AppKey]; !ok {
					var app store.App
					if err := tx.Get(g.AppKey, &app); err == nil {
						apps[g.AppKey] = app
					}
				}
			}
			return nil
		})
		if err != nil {
			return store.Gear{}, store.App{}, false
		}
		x.rev, x.gear, x.apps = rev, gears, apps
	}
	g, ok := x.gear[src.String()]
	if !ok {
		return g, store.App{}, false
	}
	app, ok := x.apps[g.AppKey]
	return g, app, ok
}

// Enforced says whether policies are enforced (namespaced gears).
func (e *Enforcer) Enforced() bool { return e.o.Enabled }

// Apply renders the app's policy and applies it in the network
// namespace of each of its gears, atomically per gear, while they run.
func (e *Enforcer) Apply(appKey string) error {
	if !e.o.Enabled {
		return nil
	}
	app, all, err := e.appGears(appKey)
	if err != nil {
		return err
	}
	_, gears, _ := e.namespacedGears(appKey)
	pol, err := e.Policy(&app)
	if err != nil {
		return err
	}
	always := policy.Always{Gateway: e.o.Network.Normalize().Gateway(), HostPorts: e.o.Network.HostTCPPorts, Resolvers: resolvers(), DNS: e.o.DNS}
	for _, g := range all {
		if ip, err := netip.ParseAddr(g.IP); err == nil {
			always.Peers = append(always.Peers, ip)
		}
	}
	ruleset := policy.Ruleset(pol, e.ResolveHosts(pol), always)
	var errs []string
	for _, g := range gears {
		if err := applyInNetns(e.o.Network.Normalize().NetnsName(g.ID), ruleset); err != nil {
			errs = append(errs, fmt.Sprintf("gear %s: %v", g.ID, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("applying the egress policy: %s", strings.Join(errs, "; "))
	}
	return nil
}

// nsenter is the command that enters a gear's namespace (tests replace
// it).
var nsenter = "nsenter"

// applyInNetns loads an nft script inside a named network namespace. A
// namespace that is not there, or not yet or no longer one (its file
// stays a moment before a mount and after an unmount: nsenter then
// fails with EINVAL), belongs to a gear starting or stopping: nothing to
// do, the gear's own start applies its policy.
func applyInNetns(netns, script string) error {
	path := netplan.NetnsPath(netns)
	if !isNamespace(path) {
		return nil
	}
	cmd := exec.Command(nsenter, "--net="+path, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		if !isNamespace(path) {
			return nil // removed or unmounted between the check and nsenter
		}
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// isNamespace tells whether path is a namespace's mount (nsfs).
func isNamespace(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// resolvers are the nameservers gears use (they share the host's
// resolv.conf).
func resolvers() []netip.Addr {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// refreshLoop re-applies the policies with hostname rules when their
// addresses change (looked up again as their TTLs run out), until ctx
// ends.
func (e *Enforcer) refreshLoop(ctx context.Context) {
	if !e.o.Enabled {
		return
	}
	tick := time.NewTicker(hostMinTTL)
	defer tick.Stop()
	last := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		apps := e.apps()
		for i := range apps {
			p, err := e.Policy(&apps[i])
			if err != nil {
				continue
			}
			hosts := e.ResolveHosts(p)
			if len(hosts) == 0 {
				continue
			}
			sig := fmt.Sprint(hosts)
			if last[apps[i].Key()] == sig {
				continue
			}
			last[apps[i].Key()] = sig
			if err := e.Apply(apps[i].Key()); err != nil {
				e.log.Warn("refreshing egress hostnames", "app", apps[i].FullName(), "err", err)
			}
		}
	}
}

// Destinations reads, from each of the app's gears (one nft run
// each), the destinations the policy refused and those that refused the
// gears at the remote end or were unreachable, summed over the gears.
func (e *Enforcer) Destinations(appKey string) (refused, failed []policy.Refusal) {
	if !e.o.Enabled {
		return nil, nil
	}
	_, gears, _ := e.namespacedGears(appKey)
	sums := map[string]map[[2]string]int64{policy.RefusedSet: {}, policy.FailedSet: {}}
	for _, g := range gears {
		out, err := exec.Command("nsenter", "--net="+netplan.NetnsPath(e.o.Network.Normalize().NetnsName(g.ID)), "nft", "-j", "list", "sets", "table", "inet", policy.Table).Output()
		if err != nil {
			continue
		}
		for set, rs := range parseDestinations(out) {
			if sum := sums[set]; sum != nil {
				for _, r := range rs {
					sum[[2]string{r.Dest, r.Proto}] += r.Packets
				}
			}
		}
	}
	return sortedRefusals(sums[policy.RefusedSet]), sortedRefusals(sums[policy.FailedSet])
}

func sortedRefusals(sum map[[2]string]int64) []policy.Refusal {
	var rs []policy.Refusal
	for k, n := range sum {
		rs = append(rs, policy.Refusal{Dest: k[0], Proto: k[1], Packets: n})
	}
	sort.Slice(rs, func(i, j int) bool {
		return rs[i].Packets > rs[j].Packets || rs[i].Packets == rs[j].Packets && rs[i].Dest < rs[j].Dest
	})
	return rs
}

// parseDestinations reads `nft -j list sets` output: the address .
// protocol . port elements of each set, by set name.
func parseDestinations(out []byte) map[string][]policy.Refusal {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name string `json:"name"`
				// Elements of other sets (the learned addresses) are
				// plain values: read lazily.
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if json.Unmarshal(out, &doc) != nil {
		return nil
	}
	sets := map[string][]policy.Refusal{}
	for _, n := range doc.Nftables {
		if n.Set == nil {
			continue
		}
		for _, raw := range n.Set.Elem {
			var e struct {
				Elem struct {
					Val struct {
						Concat []any `json:"concat"`
					} `json:"val"`
					Counter struct {
						Packets int64 `json:"packets"`
					} `json:"counter"`
				} `json:"elem"`
			}
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			c := e.Elem.Val.Concat
			if len(c) != 3 {
				continue
			}
			sets[n.Set.Name] = append(sets[n.Set.Name], policy.Refusal{Dest: fmt.Sprintf("%v:%v", c[0], c[2]), Proto: fmt.Sprint(c[1]), Packets: e.Elem.Counter.Packets})
		}
	}
	return sets
}

// scanLoop watches each app's refusals for port scans until ctx ends. A
// flagged app gets an event (OnEgressEvent) and, with ScanBlock, its
// outbound traffic cut until ClearBlock.
func (e *Enforcer) scanLoop(ctx context.Context) {
	if !e.o.Enabled {
		return
	}
	scan := e.o.Scan
	if scan.Distinct == 0 {
		scan = policy.DefaultScan
	}
	interval := min(scan.Window/4, 5*time.Second)
	tick := time.NewTicker(max(interval, 250*time.Millisecond))
	defer tick.Stop()
	type appState struct {
		det     policy.ScanDetector
		last    map[string]int64
		flagged bool
	}
	states := map[string]*appState{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		apps := e.apps()
		for i := range apps {
			app := &apps[i]
			st := states[app.Key()]
			if st == nil {
				st = &appState{last: map[string]int64{}}
				states[app.Key()] = st
			}
			if !app.EgressBlocked && st.flagged {
				st.flagged = false // an operator cleared it
				st.det.Reset()
			}
			// Refused by the policy, and refused or unreachable at the
			// remote end: a destination counts once, whichever it was.
			var fresh, refused, failed []string
			now := map[string]int64{}
			refusedNow, failedNow := e.Destinations(app.Key())
			for i, set := range [][]policy.Refusal{refusedNow, failedNow} {
				for _, r := range set {
					key := r.Proto + " " + r.Dest
					k := fmt.Sprint(i, key)
					now[k] = r.Packets
					if r.Packets <= st.last[k] {
						continue
					}
					if i == 0 {
						refused = append(refused, key)
					} else {
						failed = append(failed, key)
					}
					if !slices.Contains(fresh, key) {
						fresh = append(fresh, key)
					}
				}
			}
			st.last = now
			if len(refused) > 0 {
				e.log.Info("egress refused", "app", app.FullName(), "destinations", strings.Join(refused, ", "))
				if e.o.OnRefused != nil {
					e.o.OnRefused(app, len(refused))
				}
			}
			if len(failed) > 0 {
				e.log.Info("egress failed at the remote end", "app", app.FullName(), "destinations", strings.Join(failed, ", "))
			}
			flagged, n := st.det.Observe(scan, time.Now(), fresh)
			if !flagged || st.flagged {
				continue
			}
			st.flagged = true
			reason := fmt.Sprintf("%d distinct destinations refused or unreachable within %s (threshold %d)", n, scan.Window, scan.Distinct)
			if e.o.ScanBlock {
				reason += "; outbound traffic cut until `gantry admin egress clear " + app.FullName() + "`"
				if err := e.setBlocked(app.Key(), true); err != nil {
					e.log.Error("blocking egress", "app", app.FullName(), "err", err)
				}
			}
			e.log.Warn("port scan suspected", "app", app.FullName(), "reason", reason)
			if e.o.OnEvent != nil {
				e.o.OnEvent(app, "port_scan", reason) // events.PortScan
			}
		}
	}
}

func (e *Enforcer) setBlocked(appKey string, blocked bool) error {
	err := e.o.Store.Update(func(tx *store.Tx) error {
		var app store.App
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		app.EgressBlocked = blocked
		return tx.Put(appKey, &app)
	})
	if err != nil {
		return err
	}
	return e.Apply(appKey)
}

// ClearBlock lets a flagged app's traffic out again.
func (e *Enforcer) ClearBlock(appKey string) error { return e.setBlocked(appKey, false) }

// apps lists every app (nil when the store cannot be read).
func (e *Enforcer) apps() []store.App {
	var apps []store.App
	e.o.Store.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	})
	return apps
}
