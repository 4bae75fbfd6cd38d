// Command egressrouter benchmarks Gantry's egress router beside squid (HTTP
// proxy mode) and HAProxy (TCP mode), Debian's, in one run, on the same
// backends and machine: proxied HTTP requests per second (keep-alive,
// small responses), a 1 GiB transfer through CONNECT, a 1 GiB transfer
// and new connections per second through the TCP proxy. Proxies run on
// core 0, the load and the backends on core 1. It prints ratios.
//
//	go run ./bench/egressrouter [-d 5s] [-c 64] [-size 1024] [-rounds 3] [-only gantry,squid,haproxy]
//
// The Gantry side is the real egressrouter package in a process of its
// own (this program re-executed), with an ACL that allows everything and
// no access log (squid's is off too).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/egress/policy"
	egressrouter "github.com/gantry-paas/gantry/internal/egress/router"
)

var (
	dur     = flag.Duration("d", 5*time.Second, "duration of each rate run")
	conns   = flag.Int("c", 64, "concurrent connections of the rate runs")
	size    = flag.Int("size", 1024, "MiB per transfer")
	nRounds = flag.Int("rounds", 3, "interleaved rounds; figures are their medians")
	only    = flag.String("only", "", "comma-separated proxies (gantry,squid,haproxy)")
	serve   = flag.String("serve-gantry", "", "internal: run the egress router (proxyport,tcpport,target)")
)

func main() {
	flag.Parse()
	if *serve != "" {
		serveGantry(*serve)
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "egressrouter bench:", err)
		os.Exit(1)
	}
}

type proxy struct {
	name     string
	httpAddr string // HTTP proxy (absolute URLs and CONNECT); "" for none
	tcpAddr  string // TCP proxy to the byte source; "" for none
	rateAddr string // TCP proxy to the greeter (one line, then close)
	cmd      *exec.Cmd
}

type results struct {
	rps, connectMBs, tcpMBs, connPerSec float64
}

func run() error {
	dir, err := os.MkdirTemp("", "egress-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777) // squid drops to its own user
	pinSelf(1)

	// Backends: a small HTTP response and an endless byte source (the
	// connection rate reads its first byte).
	httpAddr := serveHTTP()
	srcAddr := serveSource()
	greetAddr := serveGreeter()

	var ps []*proxy
	want := func(n string) bool { return *only == "" || strings.Contains(","+*only+",", ","+n+",") }
	exe, _ := os.Executable()
	if want("gantry") {
		hp, tp, gp := freePort(), freePort(), freePort()
		ps = append(ps, &proxy{name: "gantry", httpAddr: fmt.Sprintf("127.0.0.1:%d", hp), tcpAddr: fmt.Sprintf("127.0.0.1:%d", tp), rateAddr: fmt.Sprintf("127.0.0.1:%d", gp),
			cmd: exec.Command("taskset", "-c", "0", exe, "-serve-gantry", fmt.Sprintf("%d,%d,%s,%d,%s", hp, tp, srcAddr, gp, greetAddr))})
	}
	if want("squid") {
		if _, err := exec.LookPath("squid"); err != nil {
			return fmt.Errorf("squid is not installed: run scripts/install-deps")
		}
		p := freePort()
		conf := filepath.Join(dir, "squid.conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`http_port 127.0.0.1:%d
http_access allow all
cache deny all
cache_mem 0 MB
access_log none
cache_log %s/cache.log
pid_filename %s/squid.pid
coredump_dir %s
shutdown_lifetime 0 seconds
max_filedescriptors 16384
`, p, dir, dir, dir)), 0o644)
		ps = append(ps, &proxy{name: "squid", httpAddr: fmt.Sprintf("127.0.0.1:%d", p), cmd: exec.Command("taskset", "-c", "0", "squid", "-N", "-f", conf)})
	}
	if want("haproxy") {
		if _, err := exec.LookPath("haproxy"); err != nil {
			return fmt.Errorf("haproxy is not installed: run scripts/install-deps")
		}
		p, gp := freePort(), freePort()
		conf := filepath.Join(dir, "haproxy.cfg")
		os.WriteFile(conf, []byte(fmt.Sprintf(`global
  maxconn 8000
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:%d
  default_backend b
backend b
  server s1 %s
frontend g
  bind 127.0.0.1:%d
  default_backend gb
backend gb
  server s1 %s
`, p, srcAddr, gp, greetAddr)), 0o644)
		ps = append(ps, &proxy{name: "haproxy", tcpAddr: fmt.Sprintf("127.0.0.1:%d", p), rateAddr: fmt.Sprintf("127.0.0.1:%d", gp), cmd: exec.Command("taskset", "-c", "0", "haproxy", "-f", conf)})
	}
	// All proxies run at once (idle ones cost nothing); the measurements
	// interleave over rounds and each figure is the median of its rounds,
	// so that the machine's drift hits every proxy alike.
	stop := func(p *proxy) {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
	for _, p := range ps {
		p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
		if err := p.cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		defer stop(p)
		for _, a := range []string{p.httpAddr, p.tcpAddr, p.rateAddr} {
			if a != "" {
				if err := waitListen(a); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
			}
		}
	}
	rounds := map[string][]results{}
	for round := 1; round <= *nRounds; round++ {
		for _, p := range ps {
			var r results
			if p.httpAddr != "" {
				if r.rps, err = wrkThrough(dir, p.httpAddr, httpAddr); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				if r.connectMBs, err = transfer(p.httpAddr, srcAddr, true); err != nil {
					return fmt.Errorf("%s CONNECT: %w", p.name, err)
				}
			}
			if p.tcpAddr != "" {
				if r.tcpMBs, err = transfer(p.tcpAddr, "", false); err != nil {
					return fmt.Errorf("%s TCP: %w", p.name, err)
				}
				r.connPerSec = connRate(p.rateAddr)
			}
			rounds[p.name] = append(rounds[p.name], r)
			fmt.Fprintf(os.Stderr, "round %d: %s %+v\n", round, p.name, r)
		}
	}
	res := map[string]*results{}
	for name, rs := range rounds {
		med := func(f func(*results) float64) float64 {
			vs := make([]float64, len(rs))
			for i := range rs {
				vs[i] = f(&rs[i])
			}
			sort.Float64s(vs)
			return vs[len(vs)/2]
		}
		res[name] = &results{rps: med(func(x *results) float64 { return x.rps }), connectMBs: med(func(x *results) float64 { return x.connectMBs }),
			tcpMBs: med(func(x *results) float64 { return x.tcpMBs }), connPerSec: med(func(x *results) float64 { return x.connPerSec })}
	}

	fmt.Printf("\n%-8s %14s %10s %16s %10s %14s %10s %14s %10s\n", "proxy", "HTTP req/s", "vs squid", "CONNECT MB/s", "vs squid", "TCP MB/s", "vs HAP", "TCP conn/s", "vs HAP")
	ratio := func(v float64, base *results, f func(*results) float64) string {
		if base == nil || f(base) == 0 || v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", v/f(base))
	}
	num := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	for _, p := range ps {
		r := res[p.name]
		fmt.Printf("%-8s %14s %10s %16s %10s %14s %10s %14s %10s\n", p.name,
			num(r.rps), ratio(r.rps, res["squid"], func(x *results) float64 { return x.rps }),
			num(r.connectMBs), ratio(r.connectMBs, res["squid"], func(x *results) float64 { return x.connectMBs }),
			num(r.tcpMBs), ratio(r.tcpMBs, res["haproxy"], func(x *results) float64 { return x.tcpMBs }),
			num(r.connPerSec), ratio(r.connPerSec, res["haproxy"], func(x *results) float64 { return x.connPerSec }))
	}
	fmt.Printf("\n(medians of %d interleaved rounds; %s runs, %d connections, %d MiB transfers; proxies on core 0, load and backends on core 1)\n", *nRounds, *dur, *conns, *size)
	return nil
}

// serveGantry runs the egress router: an HTTP proxy allowing everything
// and a TCP proxy to target, for gears at 127.0.0.1.
func serveGantry(spec string) {
	f := strings.Split(spec, ",")
	hp, _ := strconv.Atoi(f[0])
	tp, _ := strconv.Atoi(f[1])
	gp, _ := strconv.Atoi(f[3])
	all, _ := policy.ParseACL("all")
	r := egressrouter.New(egressrouter.Options{Addr: netip.MustParseAddr("127.0.0.1"), ProxyPort: hp, Redirects: 1, RedirectBase: freePort()})
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if path := os.Getenv("GANTRY_BENCH_CPUPROFILE"); path != "" { // where the router's time goes
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := r.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r.Apply([]egressrouter.App{{Name: "bench/app", Gears: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Proxy: true, ACL: policy.ACL{all},
		TCP: []egressrouter.TCPProxy{{Port: tp, Targets: []string{f[2]}}, {Port: gp, Targets: []string{f[4]}}}}})
	<-ctx.Done()
}

func serveHTTP() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	body := []byte(strings.Repeat("x", 64))
	go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}).Serve(ln)
	return ln.Addr().String()
}

// serveSource writes zeros to every connection until it closes.
func serveSource() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	buf := make([]byte, 256<<10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// serveGreeter writes one line to every connection and closes it.
func serveGreeter() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi\n"))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

var rpsRE = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)

// wrkThrough loads the HTTP proxy with absolute-URL requests to backend.
func wrkThrough(dir, proxyAddr, backend string) (float64, error) {
	script := filepath.Join(dir, "proxy.lua")
	os.WriteFile(script, []byte(fmt.Sprintf("wrk.path = \"http://%s/\"\nwrk.headers[\"Host\"] = \"%s\"\n", backend, backend)), 0o644)
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(*conns), "-d"+strconv.Itoa(int(dur.Seconds()))+"s", "-s", script, "http://"+proxyAddr).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") {
		return 0, fmt.Errorf("wrk: errors in the responses\n%s", out)
	}
	m := rpsRE.FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("wrk output: %s", out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// transfer reads size MiB through the proxy (after a CONNECT to target
// when connect is set) and returns MB/s.
func transfer(proxyAddr, target string, connect bool) (float64, error) {
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if connect {
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		head := make([]byte, 0, 256)
		one := make([]byte, 1)
		for !strings.HasSuffix(string(head), "\r\n\r\n") {
			if _, err := c.Read(one); err != nil {
				return 0, fmt.Errorf("CONNECT answer: %v (%q)", err, head)
			}
			head = append(head, one[0])
		}
		if !strings.Contains(strings.SplitN(string(head), "\r\n", 2)[0], " 200") {
			return 0, fmt.Errorf("CONNECT answered %q", head)
		}
	}
	want := int64(*size) << 20
	start := time.Now()
	buf := make([]byte, 1<<20)
	var n int64
	for n < want {
		k, err := c.Read(buf[:min(int64(len(buf)), want-n)])
		n += int64(k)
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// connRate opens connections through the TCP proxy to the greeter, reads
// its line to the end and closes, for dur, from conns/4 goroutines.
func connRate(addr string) float64 {
	var n atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *conns / 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					continue
				}
				got := 0
				for {
					k, err := c.Read(b)
					got += k
					if err != nil {
						break
					}
				}
				if got == 3 {
					n.Add(1)
				}
				c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT pile-up on the client side
				c.Close()
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / dur.Seconds()
}

func freePort() int {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListen(addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

// pinSelf keeps this process (load and backends) on one core.
func pinSelf(cpu int) {
	exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(os.Getpid())).Run()
}
