// Command cluster measures a cluster of three Gantry servers on this host
// (each at its own loopback address, gears as processes) and the store
// beneath it:
//
//   - store: write latency and watch latency (a write on one store seen by
//     another) on etcd (one member, fsync on) and on SQLite; size per
//     1,000 apps;
//
//   - route change: an alias added through machine 1's API, until all
//     three routers serve it (after the API answered);
//
//   - a machine's death (its server and gears killed under load through
//     machine 1's router): until the routers stop sending to it (the last
//     answer from its gears), failed requests, and until its gears serve
//     on the others (grace 5s);
//
//   - requests/s through one router and through three (with each router's
//     CPU), honestly on a host of this size.
//
//     go run ./bench/cluster [-d 5s] [-n 50]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
	"github.com/gantry-paas/gantry/internal/control/store"
)

func main() {
	d := flag.Duration("d", 5*time.Second, "duration of each throughput run")
	n := flag.Int("n", 50, "route changes and store writes to time")
	flag.Parse()
	if err := storeBench(*n); err != nil {
		fmt.Fprintln(os.Stderr, "cluster: store:", err)
		os.Exit(1)
	}
	if err := clusterBench(*d, *n); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// storeBench: write and watch latency, and size per 1,000 apps, on etcd
// and SQLite.
func storeBench(n int) error {
	dir, err := os.MkdirTemp("", "gantry-bench-store")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	free := func() url.URL {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	cu, pu := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	key := filepath.Join(dir, "secrets.key")
	ea, _ := store.New(store.NewEtcd(c, "/gantry/"), key)
	eb, _ := store.New(store.NewEtcd(c, "/gantry/"), key)
	sq, err := store.Open(filepath.Join(dir, "gantry.db"))
	if err != nil {
		return err
	}
	defer sq.Close()

	fmt.Println("== store")
	fmt.Printf("%-8s %14s %14s %14s %14s %16s\n", "backend", "write p50", "write p99", "watch p50", "watch p99", "size/1000 apps")
	for _, b := range []struct {
		name   string
		w, r   *store.Store
		sizeOf func() int64
	}{
		{"sqlite", sq, sq, func() int64 {
			var t int64
			for _, f := range []string{"gantry.db", "gantry.db-wal"} {
				if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t += fi.Size()
				}
			}
			return t
		}},
		{"etcd", ea, eb, func() int64 {
			st, err := c.Status(context.Background(), cu.String())
			if err != nil {
				return 0
			}
			return st.DbSizeInUse
		}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		watch := b.r.Watch(ctx)
		var writes, watches []time.Duration
		for i := 0; i < n; i++ {
			start := time.Now()
			err := b.w.Update(func(tx *store.Tx) error {
				return tx.Put(store.DomainKey(fmt.Sprintf("bench%04d", i)), &store.Domain{Name: "bench", Owner: "b"})
			})
			if err != nil {
				cancel()
				return err
			}
			writes = append(writes, time.Since(start))
			select {
			case <-watch:
				watches = append(watches, time.Since(start))
			case <-time.After(5 * time.Second):
			}
		}
		cancel()
		before := b.sizeOf()
		for i := 0; i < 1000; i += 20 { // 120 writes: within etcd's 128 per transaction
			err := b.w.Update(func(tx *store.Tx) error {
				for j := i; j < i+20; j++ {
					a := store.App{ID: fmt.Sprintf("%016x", j), Name: fmt.Sprintf("app%d", j), Domain: "bench", Owner: "b", Type: "nodejs",
						Host: fmt.Sprintf("app%d-bench.localhost", j), Scale: 2, Branch: "main", Env: map[string]string{"A": "1", "SECRET": "xyzzy"}, Created: time.Now()}
					tx.Put(a.Key(), &a)
					tx.Put(store.HostKey(a.Host), &store.Host{Name: a.Host, AppKey: a.Key()})
					tx.Put(store.DeploymentKey(a.ID, "d1"), &store.Deployment{ID: "d1", AppID: a.ID, Commit: strings.Repeat("a", 40), Command: "npm start", Created: time.Now()})
					for g := 0; g < 2; g++ {
						tx.Put(store.GearKey(fmt.Sprintf("%s%d", a.ID[:10], g)), &store.Gear{ID: "x", AppKey: a.Key(), IP: "10.0.0.1", Port: 8080, State: "running", Node: "m1"})
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		fmt.Printf("%-8s %14s %14s %14s %14s %13.1f MiB\n", b.name, ms(pct(writes, .5)), ms(pct(writes, .99)), ms(pct(watches, .5)), ms(pct(watches, .99)),
			float64(b.sizeOf()-before)/(1<<20))
	}
	return nil
}

type machine struct {
	name, addr, data, cfg string
	http, https           string
	cmd                   *exec.Cmd
}

var servingRE = regexp.MustCompile(`msg="gantry is serving" http=(\S+) ssh=\S+ https=(\S+)`)

func clusterBench(d time.Duration, n int) error {
	root, err := os.MkdirTemp("", "gantry-bench-cluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	bin := filepath.Join(root, "gantry")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/gantry").CombinedOutput(); err != nil {
		return fmt.Errorf("build (run from the repository root): %v\n%s", err, out)
	}
	var ms []*machine
	defer func() {
		for _, m := range ms {
			if m.cmd != nil && m.cmd.Process != nil {
				m.cmd.Process.Signal(syscall.SIGTERM)
				m.cmd.Wait()
			}
			benchenv.KillUnder(m.data)
		}
	}()
	start := func(m *machine, extra ...string) error {
		args := append([]string{"server", "--data", m.data, "--http", m.addr + ":0", "--https", m.addr + ":0", "--ssh", m.addr + ":0",
			"--client-config", m.cfg, "--isolation", "process", "--host", m.addr, "--advertise", m.addr, "--node-name", m.name,
			"--node-grace", "5s", "--alias-verification", "off", "--max-client-conns", "0", "--access-log", "off",
			"--etcd-client-port", "33790", "--etcd-peer-port", "33800", "--peer-port", "37443"}, extra...)
		m.cmd = exec.Command(bin, args...)
		m.cmd.Env = append(os.Environ(), "GANTRY_CONFIG="+m.cfg)
		stderr, _ := m.cmd.StderrPipe()
		if err := m.cmd.Start(); err != nil {
			return err
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if mm := servingRE.FindStringSubmatch(sc.Text()); mm != nil {
				m.http, m.https = mm[1], mm[2]
				go io.Copy(io.Discard, stderr)
				return nil
			}
		}
		return fmt.Errorf("%s exited before serving", m.name)
	}
	for i := 1; i <= 3; i++ {
		ms = append(ms, &machine{name: fmt.Sprintf("m%d", i), addr: fmt.Sprintf("127.0.30.%d", i),
			data: filepath.Join(root, fmt.Sprintf("m%d", i)), cfg: filepath.Join(root, fmt.Sprintf("m%d.json", i))})
	}
	cli := func(args ...string) (string, error) {
		c := exec.Command(bin, args...)
		c.Env = append(os.Environ(), "GANTRY_CONFIG="+ms[0].cfg, "HOME="+root)
		out, err := c.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("gantry %v: %v\n%s", args, err, out)
		}
		return string(out), nil
	}
	if err := start(ms[0], "--cluster-init"); err != nil {
		return err
	}
	for _, m := range ms[1:] {
		out, err := cli("node", "token", "--json")
		if err != nil {
			return err
		}
		var tok struct{ Token string }
		json.Unmarshal([]byte(out), &tok)
		if err := start(m, "--join", "https://"+ms[0].https, "--token", tok.Token); err != nil {
			return err
		}
	}
	if _, err := cli("domain", "create", "bench"); err != nil {
		return err
	}
	if _, err := cli("app", "create", "web", "--type", "nodejs"); err != nil {
		return err
	}
	if _, err := cli("app", "scale", "web", "--gears", "6"); err != nil {
		return err
	}
	host := "web-bench.localhost"
	client := func(m *machine) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", m.http)
			}}}
	}
	get := func(c *http.Client, host string) (int, string) {
		req, _ := http.NewRequest("GET", "http://x/", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return 0, ""
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	// Route change on all routers.
	fmt.Println("\n== route change (alias added through machine 1's API, until all 3 routers serve it)")
	var lags []time.Duration
	for i := 0; i < n; i++ {
		alias := fmt.Sprintf("a%d.example.test", i)
		if _, err := cli("alias", "add", "web", alias); err != nil {
			return err
		}
		answered := time.Now()
		var wg sync.WaitGroup
		var worst atomic.Int64
		for _, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := client(m)
				for time.Since(answered) < 10*time.Second {
					if code, _ := get(c, alias); code == 200 {
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
				for {
					lag := int64(time.Since(answered))
					old := worst.Load()
					if lag <= old || worst.CompareAndSwap(old, lag) {
						break
					}
				}
			}()
		}
		wg.Wait()
		lags = append(lags, time.Duration(worst.Load()))
	}
	fmt.Printf("after the API answered: p50 %s, p99 %s, max %s (n=%d)\n", ms2(pct(lags, .5)), ms2(pct(lags, .99)), ms2(pct(lags, 1)), len(lags))

	// Throughput: one router, then three.
	fmt.Println("\n== requests/s through the routers (keep-alive, 32 clients)")
	load := func(targets []*machine) (rps float64, cpu []time.Duration) {
		before := make([]time.Duration, len(targets))
		for i, m := range targets {
			before[i] = cpuOf(m.cmd.Process.Pid)
		}
		var count atomic.Int64
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := client(targets[w%len(targets)])
				for time.Now().Before(deadline) {
					if code, _ := get(c, host); code == 200 {
						count.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		for i, m := range targets {
			cpu = append(cpu, cpuOf(m.cmd.Process.Pid)-before[i])
		}
		return float64(count.Load()) / d.Seconds(), cpu
	}
	one, cpu1 := load(ms[:1])
	three, cpu3 := load(ms)
	fmt.Printf("1 router:  %8.0f req/s; router CPU %v\n", one, cpu1)
	fmt.Printf("3 routers: %8.0f req/s; routers' CPU %v (ratio %.2f×; the host has %d cores, shared by routers, gears and the load)\n", three, cpu3, three/one, numCPU())

	// A machine's death under load through machine 1's router.
	fmt.Println("\n== machine 2 killed (server and gears) under load through machine 1's router")
	out, err := cli("app", "show", "web", "--json")
	if err != nil {
		return err
	}
	var app struct {
		Gears []struct {
			Port int
			Node string
		}
	}
	json.Unmarshal([]byte(out), &app)
	m2ports := map[string]bool{}
	for _, g := range app.Gears {
		if g.Node == "m2" {
			m2ports[strconv.Itoa(g.Port)] = true
		}
	}
	var lastM2 atomic.Int64
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(ms[0])
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body := get(c, host)
				if code != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				if m2ports[body] {
					lastM2.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	time.Sleep(time.Second)
	killed := time.Now()
	ms[1].cmd.Process.Signal(syscall.SIGKILL)
	ms[1].cmd.Wait()
	benchenv.KillUnder(ms[1].data)
	var elsewhere time.Duration
	for time.Since(killed) < 90*time.Second {
		out, err := cli("app", "show", "web", "--json")
		if err == nil {
			json.Unmarshal([]byte(out), &app)
			running := 0
			onM2 := 0
			for _, g := range app.Gears {
				if g.Node == "m2" {
					onM2++
				} else {
					running++
				}
			}
			if onM2 == 0 && running == 6 {
				elsewhere = time.Since(killed)
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	last := time.Duration(0)
	if v := lastM2.Load(); v > killed.UnixNano() {
		last = time.Duration(v - killed.UnixNano())
	}
	if last == 0 {
		fmt.Println("last answer from its gears: none after the kill (its gears refuse at once; aim ≤ 2 s)")
	} else {
		fmt.Printf("last answer from its gears: %s after the kill (aim ≤ 2 s)\n", ms2(last))
	}
	fmt.Printf("its gears serving on the others: %s after the kill (aim ≤ 30 s; grace 5 s)\n", ms2(elsewhere))
	fmt.Printf("requests meanwhile: %d ok, %d failed\n", ok.Load(), failed.Load())
	ms[1].cmd = nil
	return nil
}

func ms2(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return ms(d)
}

// cpuOf is a process's user+system CPU time.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
