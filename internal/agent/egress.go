package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/egress"
	"github.com/gantry-paas/gantry/internal/netplan"
	"github.com/gantry-paas/gantry/internal/store"
)

// hostCache keeps the addresses of hostname rules, refreshed after
// hostTTL (Go's resolver does not report DNS TTLs).
type hostCache struct {
	mu    sync.Mutex
	addrs map[string]hostAddrs
}

type hostAddrs struct {
	addrs    []netip.Addr
	resolved time.Time
}

const hostTTL = 30 * time.Second

func (c *hostCache) lookup(host string) []netip.Addr {
	c.mu.Lock()
	e, ok := c.addrs[host]
	c.mu.Unlock()
	if ok && time.Since(e.resolved) < hostTTL {
		return e.addrs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil && ok {
		addrs = e.addrs // keep the last answer while DNS fails
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	c.mu.Lock()
	if c.addrs == nil {
		c.addrs = map[string]hostAddrs{}
	}
	c.addrs[host] = hostAddrs{addrs: addrs, resolved: time.Now()}
	c.mu.Unlock()
	return addrs
}

// EgressPolicy is an app's outbound policy: its rules, then the platform
// default.
func (a *Agent) EgressPolicy(app *store.App) (egress.Policy, error) {
	p := egress.Policy{Default: a.o.EgressDefault}
	if p.Default == "" {
		p.Default = egress.Allow
	}
	for _, r := range app.Egress {
		rule, err := egress.Parse(r.Action, r.Rule, a.EgressLabelTable())
		if err != nil {
			return p, err
		}
		p.Rules = append(p.Rules, rule)
	}
	return p, nil
}

func (a *Agent) EgressLabelTable() egress.Labels {
	if a.o.EgressLabels != nil {
		return a.o.EgressLabels
	}
	return egress.DefaultLabels
}

// ResolveEgressHosts resolves the policy's hostname rules.
func (a *Agent) ResolveEgressHosts(p egress.Policy) map[string][]netip.Addr {
	hosts := map[string][]netip.Addr{}
	for _, r := range p.Rules {
		if r.Host != "" {
			hosts[r.Host] = a.hosts.lookup(r.Host)
		}
	}
	return hosts
}

// EgressEnforced says whether policies are enforced (namespaced gears).
func (a *Agent) EgressEnforced() bool { return a.namespaced() }

// ApplyEgress renders the app's policy and applies it in the network
// namespace of each of its gears, atomically per gear, while they run.
func (a *Agent) ApplyEgress(appKey string) error {
	if !a.namespaced() {
		return nil
	}
	var app store.App
	var gears []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		all, err := store.List[store.Gear](tx, "gears/")
		for _, g := range all {
			if g.AppKey == appKey && g.Isolation == Namespaces {
				gears = append(gears, g)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	policy, err := a.EgressPolicy(&app)
	if err != nil {
		return err
	}
	always := egress.Always{Gateway: a.o.Network.Normalize().Gateway(), HostPorts: a.o.Network.HostTCPPorts, Resolvers: resolvers()}
	for _, g := range gears {
		if ip, err := netip.ParseAddr(g.IP); err == nil {
			always.Peers = append(always.Peers, ip)
		}
	}
	ruleset := egress.Ruleset(policy, a.ResolveEgressHosts(policy), always)
	var errs []string
	for _, g := range gears {
		if err := applyInNetns(a.o.Network.Normalize().NetnsName(g.ID), ruleset); err != nil {
			errs = append(errs, fmt.Sprintf("gear %s: %v", g.ID, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("applying the egress policy: %s", strings.Join(errs, "; "))
	}
	return nil
}

// applyInNetns loads an nft script inside a named network namespace.
func applyInNetns(netns, script string) error {
	if _, err := os.Stat(netplan.NetnsDir + "/" + netns); err != nil {
		return nil // the gear's network is gone (stopping)
	}
	cmd := exec.Command("ip", "netns", "exec", netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
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

// egressLoop re-applies the policies with hostname rules when their
// addresses change, until ctx ends.
func (a *Agent) egressLoop(ctx context.Context) {
	if !a.namespaced() {
		return
	}
	tick := time.NewTicker(hostTTL)
	defer tick.Stop()
	last := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var apps []store.App
		a.o.Store.View(func(tx *store.Tx) error {
			var err error
			apps, err = store.List[store.App](tx, "apps/")
			return err
		})
		for i := range apps {
			p, err := a.EgressPolicy(&apps[i])
			if err != nil {
				continue
			}
			hosts := a.ResolveEgressHosts(p)
			if len(hosts) == 0 {
				continue
			}
			sig := fmt.Sprint(hosts)
			if last[apps[i].Key()] == sig {
				continue
			}
			last[apps[i].Key()] = sig
			if err := a.ApplyEgress(apps[i].Key()); err != nil {
				a.log.Warn("refreshing egress hostnames", "app", apps[i].FullName(), "err", err)
			}
		}
	}
}
