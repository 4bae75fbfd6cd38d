// Command gears measures gears themselves, plain-process mode beside
// namespace mode in one run: the time from "start gear" to "gear accepts
// connections" for a tiny app (Gantry's own static server), the memory an
// idle gear costs the machine (the platform's share, app excluded, and the
// total), and how many idle gears the machine holds.
//
//	go build -o /tmp/gantry ./cmd/gantry && sudo go run ./bench/gears -exe /tmp/gantry [-n 20] [-idle 100]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/node/agent"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

func main() {
	exe := flag.String("exe", "", "the gantry binary (go build -o /tmp/gantry ./cmd/gantry)")
	n := flag.Int("n", 20, "starts to time per mode")
	idle := flag.Int("idle", 100, "idle gears to hold per mode for the memory measure")
	flag.Parse()
	if *exe == "" {
		fmt.Fprintln(os.Stderr, "pass -exe: the gantry binary")
		os.Exit(2)
	}
	modes := []string{agent.Process}
	if err := sandbox.Available(); err == nil {
		modes = append(modes, agent.Namespaces)
	} else {
		fmt.Printf("namespace mode not measured: %v\n", err)
	}
	fmt.Printf("gears: tiny app = gantry static-serve; %d timed starts, %d idle gears per mode\n\n", *n, *idle)
	alone, err := appAlone(*exe, *n)
	if err != nil {
		fmt.Fprintf(os.Stderr, "the app alone: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("  the app alone (sh -c 'exec gantry static-serve', until it accepts): p50 %s\n\n", alone)
	fmt.Printf("  %-11s %12s %12s %14s %18s %16s %s\n", "mode", "start p50", "start p90", "beyond the app", "platform PSS/gear", "machine/gear", "idle gears held")
	var p50s []time.Duration
	for _, m := range modes {
		r, err := measure(*exe, m, *n, *idle)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", m, err)
			os.Exit(1)
		}
		p50s = append(p50s, r.p50)
		fmt.Printf("  %-11s %12s %12s %14s %15.1f MiB %13.1f MiB %d\n", m, r.p50, r.p90, r.p50-alone, r.platformMiB, r.totalMiB, r.held)
	}
	if len(p50s) == 2 {
		fmt.Printf("\n  start time ratio namespaces / process: %.2f\n", float64(p50s[1])/float64(p50s[0]))
	}
}

// appAlone times the tiny app started n times by itself, as the gears
// start it, from the start until it accepts a connection: the part of a
// gear's start that is the app's own.
func appAlone(exe string, n int) (time.Duration, error) {
	site, err := os.MkdirTemp("", "gantry-bench-app")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(site)
	os.WriteFile(filepath.Join(site, "index.html"), []byte("hi\n"), 0o644)
	var times []time.Duration
	for i := 0; i < n; i++ {
		l, err := stdnet.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*stdnet.TCPAddr).Port
		l.Close()
		cmd := exec.Command("/bin/sh", "-c", "exec '"+exe+"' static-serve")
		cmd.Dir = site
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PORT=" + strconv.Itoa(port), "IP=127.0.0.1"}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		for {
			if c, err := stdnet.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				c.Close()
				break
			}
			if time.Since(t0) > 10*time.Second {
				cmd.Process.Kill()
				return 0, fmt.Errorf("static-serve did not listen within 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		times = append(times, time.Since(t0))
		cmd.Process.Kill()
		cmd.Wait()
		time.Sleep(20 * time.Millisecond)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2].Round(time.Millisecond), nil
}

type result struct {
	p50, p90              time.Duration
	platformMiB, totalMiB float64
	held                  int
}

func measure(exe, mode string, n, idle int) (result, error) {
	var r result
	root, err := os.MkdirTemp("", "gantry-bench-gears")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(root)
	lay := layout.Layout{Root: root}
	st, err := store.Open(lay.DB())
	if err != nil {
		return r, err
	}
	defer st.Close()
	prefix := "gb" + strconv.Itoa(os.Getpid()%10000)
	net := netplan.Plan{Prefix: prefix, Subnet: netip.MustParsePrefix("10.234.0.0/16")}
	defer netplan.RemoveAll(prefix)
	a, err := agent.New(agent.Options{Store: st, Layout: lay, Exe: exe, Isolation: mode, Network: net,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Env:     func(app *store.App, dep *store.Deployment, g *store.Gear) []string { return gearEnv(g) },
		RunHost: func(context.Context, string, []string, io.Writer, time.Duration, ...string) error { return nil }})
	if err != nil {
		return r, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	<-a.Ready()

	site := filepath.Join(root, "site")
	os.MkdirAll(site, 0o755)
	os.WriteFile(filepath.Join(site, "index.html"), []byte("hi\n"), 0o644)
	mkApp := func(i int) (string, error) {
		app := store.App{ID: fmt.Sprintf("app%05d", i), Name: fmt.Sprintf("a%d", i), Domain: "bench", Scale: 1, Host: fmt.Sprintf("a%d-bench.localhost", i)}
		lay.EnsureApp(app.ID)
		dir := lay.Deployment(app.ID, "d1")
		os.MkdirAll(filepath.Dir(dir), 0o755)
		if err := copyDir(site, dir); err != nil {
			return "", err
		}
		dep := store.Deployment{ID: "d1", AppID: app.ID, Type: "static", Command: "exec '" + exe + "' static-serve", Dir: dir}
		return app.Key(), st.Update(func(tx *store.Tx) error {
			tx.Put(app.Key(), &app)
			return tx.Put(store.DeploymentKey(app.ID, "d1"), &dep)
		})
	}

	// Start latency: one app, restarted n times (each a new gear). The
	// gear it replaces is stopped (in the background) before the next
	// start is timed, as between two deploys: on two cores its teardown
	// (runc, its namespace's removal, which holds the kernel's network
	// lock) would otherwise slow the next start.
	key, err := mkApp(0)
	if err != nil {
		return r, err
	}
	gears := func() int {
		var gs []store.Gear
		st.View(func(tx *store.Tx) (err error) {
			gs, err = store.ListGears(tx)
			return err
		})
		return len(gs)
	}
	var starts []time.Duration
	for i := 0; i < n; i++ {
		for deadline := time.Now().Add(10 * time.Second); gears() > 1 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if err := a.Rollout(ctx, key, "d1", io.Discard); err != nil {
			return r, err
		}
		starts = append(starts, time.Since(t0))
	}
	a.Delete(ctx, key)
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	r.p50, r.p90 = starts[len(starts)/2].Round(time.Millisecond), starts[len(starts)*9/10].Round(time.Millisecond)

	// Memory: idle gears held at once.
	time.Sleep(500 * time.Millisecond)
	before := memUsed()
	var keys []string
	for i := 1; i <= idle; i++ {
		k, err := mkApp(i)
		if err != nil {
			return r, err
		}
		if err := a.Rollout(ctx, k, "d1", io.Discard); err != nil {
			fmt.Fprintf(os.Stderr, "  %s: stopped after %d gears: %v\n", mode, i-1, err)
			break
		}
		keys = append(keys, k)
	}
	time.Sleep(time.Second)
	after := memUsed()
	r.held = len(keys)
	r.totalMiB = float64(after-before) / float64(len(keys)) / (1 << 20)
	r.platformMiB = float64(pssOf(func(cmd string) bool {
		return strings.Contains(cmd, root) && (strings.Contains(cmd, " shim ") || strings.HasPrefix(cmd, "runc") || strings.Contains(cmd, "gear-init"))
	})) / float64(len(keys)) / (1 << 20)
	for _, k := range keys {
		a.Delete(ctx, k)
	}
	return r, nil
}

func gearEnv(g *store.Gear) []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PORT=" + strconv.Itoa(g.Port), "IP=" + g.IP}
}

// memUsed is MemTotal - MemAvailable from /proc/meminfo, in bytes.
func memUsed() int64 {
	f, _ := os.Open("/proc/meminfo")
	defer f.Close()
	vals := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 {
			v, _ := strconv.ParseInt(fs[1], 10, 64)
			vals[strings.TrimSuffix(fs[0], ":")] = v * 1024
		}
	}
	return vals["MemTotal"] - vals["MemAvailable"]
}

// pssOf sums the proportional set size (shared pages split between their
// users) of processes whose command line matches.
func pssOf(match func(cmdline string) bool) int64 {
	var total int64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !match(strings.ReplaceAll(string(cmd), "\x00", " ")) {
			continue
		}
		rollup, _ := os.ReadFile("/proc/" + e.Name() + "/smaps_rollup")
		for _, l := range strings.Split(string(rollup), "\n") {
			if strings.HasPrefix(l, "Pss:") {
				kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
				total += kb * 1024
			}
		}
	}
	return total
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
