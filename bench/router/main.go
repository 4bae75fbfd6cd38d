// Command router benchmarks Gantry's router beside HAProxy, nginx and Caddy
// (Debian's), in one run, on the same backend and machine: requests per
// second with p50/p99 latency for small keep-alive responses, CPU time per
// request (the proxy on one core, load generator and backend on the other),
// new connections per second, TLS handshakes per second, WebSocket echo
// round trip, and memory per idle WebSocket. It prints ratios to HAProxy.
//
//	go run ./bench/router [-d 8s] [-c 64] [-ws 9000] [-rounds 3] [-only gantry,haproxy]
//
// The Gantry side is the real router package in a process of its own
// (this program re-executed), configured as `gantry server` would be,
// without the access log (no peer logs here either).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
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
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/cores"
	"github.com/gantry-paas/gantry/internal/control/routes"

	"golang.org/x/sys/unix"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
	"github.com/gantry-paas/gantry/internal/edge/router"
)

var (
	dur     = flag.Duration("d", 8*time.Second, "duration of each load run")
	conns   = flag.Int("c", 64, "concurrent keep-alive connections")
	wsIdle  = flag.Int("ws", 9000, "idle WebSocket connections for the memory figure (each costs a proxy two descriptors; the limit here is 20,000)")
	rtts    = flag.Int("rtt", 2000, "WebSocket echo round trips")
	rounds  = flag.Int("rounds", 3, "interleaved rounds of the keep-alive run (the median is reported)")
	body    = flag.Int("body", 0, "bytes of each response body from the backend (0: a 23-byte line)")
	only    = flag.String("only", "", "comma-separated proxies to run (gantry,haproxy,nginx,caddy)")
	parts   = flag.String("parts", "plain,https,protocols", "comma-separated parts to run: plain (HTTP keep-alive, connections, WebSockets), https (HTTP/1.1 and HTTP/2 keep-alive; https1 or h2 for one of them), protocols (HTTP/2 beside HTTP/3)")
	profile = flag.String("cpuprofile", "", "write Gantry's CPU profile to this file (it is stopped with SIGTERM)")
	serveGW = flag.String("serve-gantry", "", "internal: run the Gantry router (http,https,backend,wsbackend,dir)")
	serveWS = flag.String("serve-ws", "", "internal: run the WebSocket echo backend on this address")
)

func main() {
	flag.Parse()
	raiseFDs()
	switch {
	case *serveGW != "":
		serveGantry(*serveGW)
		return
	case *serveWS != "":
		ln, err := net.Listen("tcp", *serveWS)
		if err != nil {
			panic(err)
		}
		serveWSEcho(ln)
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/router:", err)
		os.Exit(1)
	}
}

// proxy is one contender: how to start it on the proxy core.
type proxy struct {
	name      string
	http, tls string
	cmd       *exec.Cmd
	start     func(p *proxy) *exec.Cmd
	results   result
}

type result struct {
	rps, p50, p99 float64 // requests/s, ms
	cpuPerReq     float64 // µs of proxy CPU per request
	connRate      float64 // new connections/s
	tlsRate       float64 // TLS handshakes/s
	wsRTT, wsP99  float64 // µs
	wsKiB         float64 // KiB per idle WebSocket
	kaKiB         float64 // KiB per idle keep-alive connection (after a request)
	h2KiB         float64 // KiB per idle HTTP/2 connection (TLS, after a request)
	err           string
}

func run() error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk is not installed: run scripts/install-deps")
	}
	// This process (backends, load generator) on core 1; proxies on core 0.
	if err := cores.Pin(os.Getpid(), 1); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "bench-router")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := writeCert(dir)
	if err != nil {
		return err
	}
	backend, stopBackend, err := startNginxBackend(dir)
	if err != nil {
		return err
	}
	defer stopBackend()
	self, _ := os.Executable()
	wsBackend := freeAddr()
	wsCmd := exec.Command(self, "-serve-ws", wsBackend)
	wsCmd.Stderr = os.Stderr
	if err := wsCmd.Start(); err != nil {
		return err
	}
	defer func() { wsCmd.Process.Kill(); wsCmd.Wait() }()
	if err := waitListen(wsBackend); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()

	proxies := []*proxy{
		{name: "haproxy", start: func(p *proxy) *exec.Cmd {
			cfg := filepath.Join(dir, "haproxy.cfg")
			os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  nbthread 1
  maxconn 9800
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option http-keep-alive
  http-reuse always
frontend f
  bind %s
  bind %s ssl crt %s alpn h2,http/1.1
  use_backend ws if { path_beg /ws }
  default_backend b
backend b
  server s1 %s
backend ws
  server w1 %s
`, p.http, p.tls, filepath.Join(dir, "combined.pem"), backend, wsBackend)), 0o644)
			return exec.Command("haproxy", "-db", "-f", cfg)
		}},
		{name: "nginx", start: func(p *proxy) *exec.Cmd {
			cfg := filepath.Join(dir, "nginx-proxy.conf")
			os.WriteFile(cfg, []byte(fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %s/nginx-proxy.pid;
error_log /dev/null crit;
events { worker_connections 19800; multi_accept on; }
http {
  access_log off;
  upstream b { server %s; keepalive 256; keepalive_requests 1000000; }
  upstream ws { server %s; }
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen %s;
    listen %s ssl http2;
    ssl_certificate %s; ssl_certificate_key %s;
    keepalive_requests 1000000;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }
    location /ws { proxy_pass http://ws; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade; proxy_read_timeout 1h; }
  }
}
`, dir, backend, wsBackend, p.http, p.tls, certFile, keyFile)), 0o644)
			return exec.Command("nginx", "-p", dir, "-c", cfg)
		}},
		{name: "caddy", start: func(p *proxy) *exec.Cmd {
			cfg := filepath.Join(dir, "Caddyfile")
			_, hp, _ := net.SplitHostPort(p.http)
			_, tp, _ := net.SplitHostPort(p.tls)
			os.WriteFile(cfg, []byte(fmt.Sprintf(`{
  admin off
  auto_https off
  http_port %s
  https_port %s
}
http://:%s {
  reverse_proxy /ws %s
  reverse_proxy %s {
    transport http {
      keepalive 60s
      keepalive_idle_conns 256
      keepalive_idle_conns_per_host 256
    }
  }
}
https://:%s {
  tls %s %s
  reverse_proxy /ws %s
  reverse_proxy %s {
    transport http {
      keepalive 60s
      keepalive_idle_conns 256
      keepalive_idle_conns_per_host 256
    }
  }
}
`, hp, tp, hp, wsBackend, backend, tp, certFile, keyFile, wsBackend, backend)), 0o644)
			c := exec.Command("caddy", "run", "--adapter", "caddyfile", "--config", cfg)
			c.Env = append(os.Environ(), "GOMAXPROCS=1", "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			return c
		}},
		{name: "gantry", start: func(p *proxy) *exec.Cmd {
			c := exec.Command(self, "-serve-gantry", strings.Join([]string{p.http, p.tls, backend, wsBackend, filepath.Join(dir, "gantry")}, ","))
			c.Env = append(os.Environ(), "GOMAXPROCS=1")
			if *profile != "" {
				c.Env = append(c.Env, "BENCH_CPUPROFILE="+*profile)
			}
			return c
		}},
	}
	if *only != "" {
		var keep []*proxy
		for _, p := range proxies {
			if strings.Contains(","+*only+",", ","+p.name+",") {
				keep = append(keep, p)
			}
		}
		proxies = keep
	}
	bodyNote := "a 23-byte body"
	if *body > 0 {
		bodyNote = fmt.Sprintf("%d-byte bodies", *body)
	}
	fmt.Printf("bench/router: %d s runs, %d keep-alive connections, %s, %d idle WebSockets; proxies on core 0, wrk and backends on core 1\n",
		int(dur.Seconds()), *conns, bodyNote, *wsIdle)
	// All proxies run at once (an idle one costs nothing); the keep-alive
	// CPU figure is taken in interleaved rounds and its median kept, so
	// that the machine's drift affects every proxy alike.
	var running []*proxy
	for _, p := range proxies {
		p.http, p.tls = freeAddr(), freeAddr()
		if err := p.launch(); err != nil {
			p.results.err = err.Error()
			fmt.Printf("  %s: %v\n", p.name, err)
			continue
		}
		defer p.kill()
		running = append(running, p)
	}
	part := func(name string) bool { return strings.Contains(","+*parts+",", ","+name+",") }
	samples := map[*proxy][]result{}
	for round := 0; round < *rounds && ctx.Err() == nil && part("plain"); round++ {
		for _, p := range running {
			r, err := keepAlive(p)
			if err != nil {
				p.results.err = err.Error()
				continue
			}
			samples[p] = append(samples[p], r)
			fmt.Printf("  round %d %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %.1f µs CPU per request\n", round+1, p.name, r.rps, r.p50, r.p99, r.cpuPerReq)
		}
	}
	for _, p := range running {
		if ctx.Err() != nil || !part("plain") {
			break
		}
		if rs := samples[p]; len(rs) > 0 {
			sort.Slice(rs, func(i, j int) bool { return rs[i].cpuPerReq < rs[j].cpuPerReq })
			m := rs[len(rs)/2]
			p.results.rps, p.results.p50, p.results.p99, p.results.cpuPerReq = m.rps, m.p50, m.p99, m.cpuPerReq
		}
		if err := measure(ctx, p); err != nil {
			p.results.err = err.Error()
			fmt.Printf("  %s: %v\n", p.name, err)
		}
	}
	if part("plain") {
		report(proxies)
	}
	if h1, h2 := part("https") || part("https1"), part("https") || part("h2"); ctx.Err() == nil && (h1 || h2) {
		fmt.Println("\nHTTPS keep-alive:")
		reportHTTPS(running, httpsRounds(running, dir, h1, h2))
	}
	if !part("protocols") {
		return nil
	}
	// HTTPS by protocol where HTTP/3 is spoken.
	fmt.Println("\nHTTPS by protocol (Go clients: net/http h2, quic-go h3; 16 streams on one connection):")
	var rows []string
	for _, p := range running {
		if (p.name != "gantry" && p.name != "caddy") || ctx.Err() != nil {
			continue
		}
		for _, r := range protocols(p) {
			rows = append(rows, fmt.Sprintf("| %s | %s | %.0f | %.2f | %.2f | %.1f | %s |", p.name, r.proto, r.rps, r.p50, r.p99, r.cpuPerReq, r.err))
		}
	}
	fmt.Println("\n| proxy | protocol | req/s | p50 ms | p99 ms | proxy CPU µs/req | error |\n|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	return nil
}

func (p *proxy) launch() error {
	p.cmd = p.start(p)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting: %w", err)
	}
	if err := pinTree(p.cmd.Process.Pid); err != nil {
		p.kill()
		return err
	}
	for _, a := range []string{p.http, p.tls} {
		if err := waitListen(a); err != nil {
			p.kill()
			return err
		}
	}
	// Children (none here, but nginx could fork) share the core.
	if err := pinTree(p.cmd.Process.Pid); err != nil {
		p.kill()
		return err
	}
	fmt.Printf("  %s: warming up\n", p.name)
	wrk("http://"+p.http+"/", 2*time.Second, *conns, false)
	return nil
}

func (p *proxy) kill() {
	if p.name == "gantry" && *profile != "" { // let it write its profile
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
			return
		case <-time.After(10 * time.Second):
		}
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
}

// keepAlive measures small keep-alive requests and the proxy's CPU time
// per request.
func keepAlive(p *proxy) (result, error) {
	var r result
	var err error
	r.rps, r.p50, r.p99, r.cpuPerReq, err = wrkKeepAlive(p, "http://"+p.http+"/")
	return r, err
}

// wrkKeepAlive runs wrk's keep-alive load at url and returns its rate,
// latency quantiles (ms) and the proxy's CPU µs per request.
func wrkKeepAlive(p *proxy, url string) (rps, p50, p99, cpuPerReq float64, err error) {
	cpu0 := cpuTime(p.cmd.Process.Pid)
	out, err := wrk(url, *dur, *conns, false)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	cpu := cpuTime(p.cmd.Process.Pid) - cpu0
	var total float64
	rps, total, p50, p99 = parseWrk(out)
	if total > 0 {
		cpuPerReq = cpu.Seconds() * 1e6 / total
	}
	return rps, p50, p99, cpuPerReq, nil
}

// measure takes the other figures of a running proxy.
func measure(ctx context.Context, p *proxy) error {
	r := &p.results
	out, err := wrk("http://"+p.http+"/", *dur/2, 16, true)
	if err != nil {
		return err
	}
	r.connRate, _, _, _ = parseWrk(out)
	out, err = wrk("https://"+p.tls+"/", *dur/2, 16, true)
	if err != nil {
		return err
	}
	r.tlsRate, _, _, _ = parseWrk(out)
	fmt.Printf("  %s: %.0f new connections/s, %.0f TLS handshakes/s\n", p.name, r.connRate, r.tlsRate)
	if r.wsRTT, r.wsP99, err = wsEcho(p.http, *rtts); err != nil {
		return fmt.Errorf("websocket echo: %w", err)
	}
	// Keep-alive connections first: the WebSockets' memory, freed, would
	// be reused for them (HAProxy's pools then grow by nothing).
	if r.kaKiB, err = idleMemory(p.cmd.Process.Pid, *wsIdle, func() (net.Conn, error) { return keepAliveDial(p.http) }); err != nil {
		return fmt.Errorf("idle keep-alive connections: %w", err)
	}
	if r.wsKiB, err = idleMemory(p.cmd.Process.Pid, *wsIdle, func() (net.Conn, error) { c, _, err := wsDial(p.http); return c, err }); err != nil {
		return fmt.Errorf("idle websockets: %w", err)
	}
	// HTTP/2 last: its connections are the largest, so what the
	// WebSockets freed covers little of them.
	if r.h2KiB, err = idleMemory(p.cmd.Process.Pid, *wsIdle, func() (net.Conn, error) { return h2IdleDial(p.tls) }); err != nil {
		return fmt.Errorf("idle HTTP/2 connections: %w", err)
	}
	fmt.Printf("  %s: WebSocket echo p50 %.0f µs p99 %.0f µs, %.1f KiB per idle WebSocket, %.1f KiB per idle keep-alive connection, %.1f KiB per idle HTTP/2 connection\n",
		p.name, r.wsRTT, r.wsP99, r.wsKiB, r.kaKiB, r.h2KiB)
	return ctx.Err()
}

func report(ps []*proxy) {
	var base *result
	for _, p := range ps {
		if p.name == "haproxy" && p.results.err == "" {
			base = &p.results
		}
	}
	ratio := func(v, b float64) string {
		if base == nil || b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", v/b)
	}
	fmt.Println()
	fmt.Printf("%-8s %10s %8s %8s %12s %8s %10s %10s %9s %9s %10s %10s %10s\n", "proxy", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "vs HAP", "conn/s", "TLS hs/s", "WS p50µs", "WS p99µs", "KiB/idleWS", "KiB/idleKA", "KiB/idleH2")
	for _, p := range ps {
		r := p.results
		if r.err != "" {
			fmt.Printf("%-8s failed: %s\n", p.name, r.err)
			continue
		}
		fmt.Printf("%-8s %10.0f %8.2f %8.2f %12.1f %8s %10.0f %10.0f %9.0f %9.0f %10.1f %10.1f %10.1f\n", p.name, r.rps, r.p50, r.p99, r.cpuPerReq,
			ratio(r.cpuPerReq, base.cpuPerReqOr()), r.connRate, r.tlsRate, r.wsRTT, r.wsP99, r.wsKiB, r.kaKiB, r.h2KiB)
	}
	if base != nil {
		fmt.Println("\nRatios to HAProxy (CPU per request: lower is better; the rest: higher is better, but latency and memory lower):")
		for _, p := range ps {
			r := p.results
			if r.err != "" || p.name == "haproxy" {
				continue
			}
			fmt.Printf("  %-7s CPU/req %s, req/s %s, conn/s %s, TLS hs/s %s, WS RTT %s, memory per idle WS %s, per idle keep-alive %s, per idle HTTP/2 %s\n", p.name,
				ratio(r.cpuPerReq, base.cpuPerReq), ratio(r.rps, base.rps), ratio(r.connRate, base.connRate), ratio(r.tlsRate, base.tlsRate),
				ratio(r.wsRTT, base.wsRTT), ratio(r.wsKiB, base.wsKiB), ratio(r.kaKiB, base.kaKiB), ratio(r.h2KiB, base.h2KiB))
		}
	}
}

func (r *result) cpuPerReqOr() float64 {
	if r == nil {
		return 0
	}
	return r.cpuPerReq
}

// wrk runs the load generator on this core; close makes every request a
// new connection (new TLS handshake on https).
func wrk(url string, d time.Duration, c int, close bool) (string, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(c), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	if strings.Contains(string(out), "Non-2xx") {
		return "", fmt.Errorf("wrk %s: errors in the responses\n%s", url, out)
	}
	return string(out), nil
}

var (
	rpsRE   = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	totalRE = regexp.MustCompile(`(\d+) requests in`)
	pctRE   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
)

func parseWrk(out string) (rps, total, p50, p99 float64) {
	if m := rpsRE.FindStringSubmatch(out); m != nil {
		rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := totalRE.FindStringSubmatch(out); m != nil {
		total, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range pctRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			p50 = v
		} else {
			p99 = v
		}
	}
	return
}

// cpuTime is the user+system time of pid and its children.
func cpuTime(pid int) time.Duration {
	var ticks int64
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func rss(pid int) int64 {
	var kib int64
	for _, p := range tree(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				n, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
				kib += n
			}
		}
	}
	return kib
}

func tree(pid int) []int {
	out := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// pinTree moves the proxy pid and its children to core 0.
func pinTree(pid int) error {
	for _, p := range tree(pid) {
		if err := cores.Pin(p, 0); err != nil {
			return err
		}
	}
	return nil
}

func freeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
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

// startNginxBackend is the HTTP backend of every proxy: nginx answering a
// small body, on this core.
func startNginxBackend(dir string) (string, func(), error) {
	addr := freeAddr()
	answer := `location / { return 200 "hello from the backend\n"; }`
	if *body > 0 {
		www := filepath.Join(dir, "www")
		os.MkdirAll(www, 0o755)
		if err := os.WriteFile(filepath.Join(www, "body"), bytes.Repeat([]byte("x"), *body), 0o644); err != nil {
			return "", nil, err
		}
		answer = fmt.Sprintf("location / { root %s; try_files /body =404; }", www)
	}
	cfg := filepath.Join(dir, "nginx-backend.conf")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %s/nginx-backend.pid;
error_log /dev/null crit;
events { worker_connections 19000; }
http {
  access_log off;
  server { listen %s; keepalive_requests 1000000; %s }
}
`, dir, addr, answer)), 0o644)
	c := exec.Command("nginx", "-p", dir, "-c", cfg)
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		return "", nil, fmt.Errorf("starting the nginx backend: %w", err)
	}
	if err := waitListen(addr); err != nil {
		c.Process.Kill()
		return "", nil, err
	}
	return addr, func() { c.Process.Kill(); c.Wait() }, nil
}

// raiseFDs lifts the soft descriptor limit to the hard one (children
// inherit it).
func raiseFDs() {
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}

// serveWSEcho accepts WebSocket upgrades and then echoes the raw bytes:
// the proxies tunnel bytes, so frames need no parsing.
func serveWSEcho(ln net.Listener) {
	func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, "websocket backend:", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				key := ""
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if k, ok := strings.CutPrefix(strings.ToLower(l), "sec-websocket-key:"); ok {
						key = strings.TrimSpace(l[len(l)-len(k):])
					}
					if l == "\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(key))
				// A plain loop: io.Copy would splice through a pipe (two
				// more descriptors per connection).
				buf := make([]byte, 512)
				for {
					n, err := br.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func acceptKey(k string) string {
	h := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsDial opens a WebSocket through the proxy at addr.
func wsDial(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade: %q %v", status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		if l == "\r\n" {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	return c, br, nil
}

func wsEcho(addr string, n int) (p50, p99 float64, err error) {
	c, br, err := wsDial(addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	msg := []byte("\x81\x85\x00\x00\x00\x00hello") // a masked text frame; echoed as bytes
	buf := make([]byte, len(msg))
	lat := make([]float64, 0, n)
	for i := 0; i < n+100; i++ {
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return 0, 0, err
		}
		if i >= 100 {
			lat = append(lat, float64(time.Since(t).Microseconds()))
		}
	}
	sort.Float64s(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// keepAliveDial opens a connection through the proxy, makes one request
// on it and leaves it open.
func keepAliveDial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// idleMemory opens n connections through the proxy (dial), leaves them
// idle and returns its resident memory growth per connection.
func idleMemory(pid, n int, dial func() (net.Conn, error)) (float64, error) {
	time.Sleep(500 * time.Millisecond)
	before := rss(pid)
	var mu sync.Mutex
	var open []net.Conn
	var firstErr error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			open = append(open, c)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	if firstErr != nil {
		return 0, fmt.Errorf("%d of %d opened: %w", len(open), n, firstErr)
	}
	time.Sleep(2 * time.Second)
	after := rss(pid)
	return float64(after-before) / float64(n), nil
}

func writeCert(dir string) (certFile, keyFile string, err error) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", err
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "combined.pem"), append(certPEM, keyPEM...), 0o600)
	return certFile, keyFile, nil
}

// serveGantry runs the router as `gantry server` does, with one app (host
// 127.0.0.1) whose gears are the backends.
func serveGantry(spec string) {
	parts := strings.Split(spec, ",")
	httpAddr, tlsAddr, backend, wsBackend, dir := parts[0], parts[1], parts[2], parts[3], parts[4]
	os.MkdirAll(dir, 0o700)
	st, err := store.Open(filepath.Join(dir, "s.db"))
	if err != nil {
		panic(err)
	}
	ca, err := pki.Open(filepath.Join(dir, "pki"), "localhost")
	if err != nil {
		panic(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rt, err := router.New(router.Options{Log: log, Listen: httpAddr, TLSListen: tlsAddr, Certs: ca, HTTP3: true})
	if err != nil {
		panic(err)
	}
	// The peers send /ws to the echo backend by path; Gantry routes by
	// host, and the WebSocket client sends Host ws.localhost.
	host, port, _ := net.SplitHostPort(backend)
	whost, wport, _ := net.SplitHostPort(wsBackend)
	p, _ := strconv.Atoi(port)
	wp, _ := strconv.Atoi(wport)
	app := store.App{Name: "bench", Domain: "b", Host: "127.0.0.1"}
	ws := store.App{Name: "ws", Domain: "b", Host: "ws.localhost"}
	err = st.Update(func(tx *store.Tx) error {
		tx.Put(app.Key(), &app)
		tx.Put(ws.Key(), &ws)
		tx.Put(store.GearKey("g1"), &store.Gear{ID: "g1", AppKey: app.Key(), IP: host, Port: p, State: store.GearRunning})
		return tx.Put(store.GearKey("w1"), &store.Gear{ID: "w1", AppKey: ws.Key(), IP: whost, Port: wp, State: store.GearRunning})
	})
	if err != nil {
		panic(err)
	}
	if err := routes.New(st, rt, log).Sync(); err != nil {
		panic(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if f := os.Getenv("BENCH_CPUPROFILE"); f != "" { // for looking at where the time goes
		out, err := os.Create(f)
		if err == nil {
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
	}
	rt.Run(ctx)
}
