// Command overlay measures what the gear overlay costs: two machines
// (network namespaces joined by a veth, as in the e2e test), each with
// its bridge, gears and rules made by netplan, and three paths between
// two gears of one app:
//
//   - same machine: gear to gear over the bridge;
//   - across machines: gear to gear over the VXLAN overlay (routed,
//     filtered by the app sets, MSS clamped);
//   - the peer: machine to machine over the plain veth, no overlay.
//
// For each: TCP throughput (one connection, -bytes) and round trips of
// one byte (p50, p99). As root.
//
//	go run ./bench/overlay [-bytes 1GiB] [-n 20000]
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

func main() {
	size := flag.Int64("bytes", 1<<30, "bytes per throughput run")
	n := flag.Int("n", 20000, "round trips per latency run")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "overlay: needs root (network namespaces, links, nftables)")
		os.Exit(2)
	}
	id := os.Getpid() % 1000
	ma, mb := fmt.Sprintf("gbo%d-a", id), fmt.Sprintf("gbo%d-b", id)
	pa, pb := fmt.Sprintf("gboa%d", id), fmt.Sprintf("gbob%d", id)
	defer func() {
		inNetns("/run/netns/"+ma, func() { netplan.RemoveAll(pa) })
		inNetns("/run/netns/"+mb, func() { netplan.RemoveAll(pb) })
		exec.Command("ip", "netns", "del", ma).Run()
		exec.Command("ip", "netns", "del", mb).Run()
	}()
	va, vb := fmt.Sprintf("gbo%da", id), fmt.Sprintf("gbo%db", id)
	for _, args := range [][]string{
		{"netns", "add", ma}, {"netns", "add", mb},
		{"link", "add", va, "type", "veth", "peer", "name", vb},
		{"link", "set", va, "netns", ma}, {"link", "set", vb, "netns", mb},
		{"-n", ma, "addr", "add", "172.30.98.1/24", "dev", va}, {"-n", mb, "addr", "add", "172.30.98.2/24", "dev", vb},
		{"-n", ma, "link", "set", va, "up"}, {"-n", mb, "link", "set", vb, "up"},
		{"-n", ma, "link", "set", "lo", "up"}, {"-n", mb, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	ip := netip.MustParseAddr
	subnet := netip.MustParsePrefix("10.235.0.0/16")
	blockA, blockB := netip.MustParsePrefix("10.235.1.0/24"), netip.MustParsePrefix("10.235.2.0/24")
	gearsA := []netplan.Gear{{ID: "a1", App: "X", IP: ip("10.235.1.2")}, {ID: "a2", App: "X", IP: ip("10.235.1.3")}}
	gearsB := []netplan.Gear{{ID: "b1", App: "X", IP: ip("10.235.2.2")}}
	planA := netplan.Plan{Prefix: pa, Subnet: subnet, Block: blockA, Gears: gearsA, Remote: gearsB,
		Overlay: &netplan.Overlay{Local: ip("172.30.98.1"), Peers: []netplan.Peer{{Name: "b", Block: blockB, Underlay: ip("172.30.98.2")}}}}
	planB := netplan.Plan{Prefix: pb, Subnet: subnet, Block: blockB, Gears: gearsB, Remote: gearsA,
		Overlay: &netplan.Overlay{Local: ip("172.30.98.2"), Peers: []netplan.Peer{{Name: "a", Block: blockA, Underlay: ip("172.30.98.1")}}}}
	inNetns("/run/netns/"+ma, func() { must(netplan.Reconcile(planA)) })
	inNetns("/run/netns/"+mb, func() { must(netplan.Reconcile(planB)) })
	gear := func(p netplan.Plan, g string) string { return netplan.NetnsPath(p.Normalize().NetnsName(g)) }

	fmt.Printf("%-14s %12s %10s %10s\n", "path", "throughput", "rtt p50", "rtt p99")
	paths := []struct{ name, server, addr, client string }{
		{"same machine", gear(planA, "a2"), "10.235.1.3", gear(planA, "a1")},
		{"overlay", gear(planB, "b1"), "10.235.2.2", gear(planA, "a1")},
		{"veth (peer)", "/run/netns/" + mb, "172.30.98.2", "/run/netns/" + ma},
	}
	var base float64
	for i, p := range paths {
		gbps := throughput(p.server, p.addr, p.client, *size)
		p50, p99 := latency(p.server, p.addr, p.client, *n)
		if i == len(paths)-1 {
			base = gbps
		}
		fmt.Printf("%-14s %9.2f Gb/s %8.0f µs %8.0f µs\n", p.name, gbps, p50, p99)
		defer func(name string, gbps float64) {
			if name == "overlay" {
				fmt.Printf("overlay throughput vs the plain veth: %.2f×\n", gbps/base)
			}
		}(p.name, gbps)
	}
}

func throughput(serverNs, addr, clientNs string, size int64) float64 {
	ln := listen(serverNs, addr+":7001")
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	c := dial(clientNs, addr+":7001")
	buf := make([]byte, 256<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			fail(err)
		}
	}
	c.Close()
	return float64(size) * 8 / time.Since(start).Seconds() / 1e9
}

func latency(serverNs, addr, clientNs string, n int) (p50, p99 float64) {
	ln := listen(serverNs, addr+":7002")
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c := dial(clientNs, addr+":7002")
	defer c.Close()
	b := []byte{1}
	rtts := make([]float64, n)
	for i := range rtts {
		start := time.Now()
		c.Write(b)
		if _, err := io.ReadFull(c, b); err != nil {
			fail(err)
		}
		rtts[i] = float64(time.Since(start).Microseconds())
	}
	sort.Float64s(rtts)
	return rtts[n/2], rtts[n*99/100]
}

func listen(ns, addr string) net.Listener {
	var ln net.Listener
	var err error
	inNetns(ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		fail(err)
	}
	return ln
}

func dial(ns, addr string) net.Conn {
	var c net.Conn
	var err error
	inNetns(ns, func() { c, err = net.DialTimeout("tcp", addr, 3*time.Second) })
	if err != nil {
		fail(err)
	}
	return c
}

// inNetns runs f on a thread in the namespace at path (sockets made by f
// stay in it).
func inNetns(path string, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		fail(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		fail(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		fail(err)
	}
	defer netns.Set(orig)
	f()
}

func must(_ []string, err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "overlay:", err)
	os.Exit(1)
}
