// Command egress measures what an app's outbound policy costs a gear: new
// TCP connections per second from a client network namespace to a server
// namespace, without a policy, and with the ruleset Gantry renders for 10
// and for 1,000 rules (none matching, so every connection walks them all
// before the default). Run as root.
//
//	go run ./bench/egress [-d 5s] [-workers 4]
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/gantry-paas/gantry/internal/egress/policy"
)

var (
	dur     = flag.Duration("d", 5*time.Second, "duration of each run")
	workers = flag.Int("workers", 4, "concurrent connecting goroutines")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/egress: needs root (network namespaces and nftables)")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/egress:", err)
		os.Exit(1)
	}
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func run() error {
	id := fmt.Sprint(os.Getpid() % 10000)
	client, server := "gbec"+id, "gbes"+id
	defer exec.Command("ip", "netns", "del", client).Run()
	defer exec.Command("ip", "netns", "del", server).Run()
	for _, c := range [][]string{
		{"ip", "netns", "add", client}, {"ip", "netns", "add", server},
		{"ip", "link", "add", "gbev" + id, "netns", client, "type", "veth", "peer", "name", "gbew" + id, "netns", server},
		{"ip", "-n", client, "addr", "add", "10.250.0.1/30", "dev", "gbev" + id},
		{"ip", "-n", server, "addr", "add", "10.250.0.2/30", "dev", "gbew" + id},
		{"ip", "-n", client, "link", "set", "gbev" + id, "up"}, {"ip", "-n", server, "link", "set", "gbew" + id, "up"},
		{"ip", "-n", client, "link", "set", "lo", "up"}, {"ip", "-n", server, "link", "set", "lo", "up"},
	} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	// Each run gets a server port of its own: the previous run's TIME_WAIT
	// connections then do not hold the client's ephemeral ports.
	listen := func(port int) (string, error) {
		addr := fmt.Sprintf("10.250.0.2:%d", port)
		ln, err := inNetns(server, func() (net.Listener, error) { return net.Listen("tcp", addr) })
		if err != nil {
			return "", err
		}
		go func() {
			defer ln.Close()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return addr, nil
	}
	if err := sh("ip", "netns", "exec", client, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"); err != nil {
		return err
	}

	fmt.Printf("bench/egress: new TCP connections/s from a gear-like namespace, %d workers, %s each\n\n", *workers, *dur)
	base := 0.0
	for i, n := range []int{-1, 0, 10, 1000} {
		addr, err := listen(8080 + i)
		if err != nil {
			return err
		}
		label := "no policy"
		if n >= 0 {
			label = fmt.Sprintf("policy, %d rules", n)
			if err := apply(client, n); err != nil {
				return err
			}
		}
		rate, err := connRate(client, addr)
		if err != nil {
			return err
		}
		if n < 0 {
			base = rate
		}
		fmt.Printf("  %-20s %9.0f conn/s  %.2f× of no policy\n", label, rate, rate/base)
	}
	return nil
}

// apply loads the ruleset of n non-matching deny rules (distinct /32s)
// before the default allow, with the platform's own accepts in front.
func apply(ns string, n int) error {
	p := policy.Policy{Default: policy.Allow}
	for i := 0; i < n; i++ {
		r, err := policy.Parse(policy.Deny, fmt.Sprintf("100.64.%d.%d/32", i/250, i%250+1), policy.DefaultLabels)
		if err != nil {
			return err
		}
		p.Rules = append(p.Rules, r)
	}
	always := policy.Always{Gateway: netip.MustParseAddr("10.250.0.1"), HostPorts: []uint16{80, 443, 2222},
		Peers: []netip.Addr{netip.MustParseAddr("10.250.0.1")}}
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(policy.Ruleset(p, nil, always))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

func connRate(ns, addr string) (float64, error) {
	var count atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	deadline := time.Now().Add(*dur)
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := inNetns(ns, func() (struct{}, error) {
				for time.Now().Before(deadline) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return struct{}{}, err
					}
					c.Close()
					count.Add(1)
				}
				return struct{}{}, nil
			})
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(count.Load()) / dur.Seconds(), nil
}

// inNetns runs f on a thread in the named namespace: sockets it creates
// belong there.
func inNetns[T any](name string, f func() (T, error)) (T, error) {
	var zero T
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return zero, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		return zero, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return zero, err
	}
	defer netns.Set(orig)
	return f()
}
