package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// HTTPS keep-alive through every proxy: HTTP/1.1 over TLS with wrk (the
// same connections as the plain figure) and HTTP/2 with h2load (nghttp2's
// load generator: 16 connections of 16 streams), in interleaved rounds;
// the median round by the proxy's CPU per request is kept.

type httpsResult struct {
	rps, p50, p99 float64 // requests/s, ms
	cpuPerReq     float64 // µs
	err           string
}

// httpsRounds measures both protocols through every running proxy and
// returns, per protocol and proxy, the median round.
func httpsRounds(running []*proxy, dir string, h1, h2 bool) map[string]map[*proxy]httpsResult {
	samples := map[string]map[*proxy][]httpsResult{}
	fns := map[string]func(*proxy, string) (httpsResult, error){}
	if h1 {
		samples["HTTP/1.1"], fns["HTTP/1.1"] = map[*proxy][]httpsResult{}, httpsWrk
	}
	if h2 {
		samples["HTTP/2"], fns["HTTP/2"] = map[*proxy][]httpsResult{}, h2Load
	}
	for round := 0; round < *rounds; round++ {
		for _, p := range running {
			for proto, fn := range fns {
				r, err := fn(p, dir)
				if err != nil {
					r.err = strings.SplitN(err.Error(), "\n", 2)[0]
				}
				samples[proto][p] = append(samples[proto][p], r)
				fmt.Printf("  round %d %s HTTPS %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %.1f µs CPU per request %s\n",
					round+1, p.name, proto, r.rps, r.p50, r.p99, r.cpuPerReq, r.err)
			}
		}
	}
	out := map[string]map[*proxy]httpsResult{}
	for proto, byProxy := range samples {
		out[proto] = map[*proxy]httpsResult{}
		for p, rs := range byProxy {
			sort.Slice(rs, func(i, j int) bool { return rs[i].err == "" && (rs[j].err != "" || rs[i].cpuPerReq < rs[j].cpuPerReq) })
			out[proto][p] = rs[len(rs)/2]
		}
	}
	return out
}

// httpsWrk is wrk's keep-alive run over TLS (HTTP/1.1).
func httpsWrk(p *proxy, _ string) (httpsResult, error) {
	var r httpsResult
	var err error
	r.rps, r.p50, r.p99, r.cpuPerReq, err = wrkKeepAlive(p, "https://"+p.tls+"/")
	return r, err
}

var (
	h2DoneRE = regexp.MustCompile(`requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed`)
	h2RateRE = regexp.MustCompile(`finished in [\d.]+\w+, ([\d.]+) req/s`)
)

// h2Load is h2load's run over HTTP/2; latency quantiles come from its
// per-request log.
func h2Load(p *proxy, dir string) (httpsResult, error) {
	var r httpsResult
	if _, err := exec.LookPath("h2load"); err != nil {
		return r, fmt.Errorf("h2load is not installed: run scripts/install-deps")
	}
	logf := filepath.Join(dir, "h2load-"+p.name+".log")
	cpu0 := cpuTime(p.cmd.Process.Pid)
	out, err := exec.Command("h2load", "-t1", "-c16", "-m16", "-D", strconv.Itoa(int(dur.Seconds())), "--log-file="+logf, "https://"+p.tls+"/").CombinedOutput()
	cpu := cpuTime(p.cmd.Process.Pid) - cpu0
	if err != nil {
		return r, fmt.Errorf("h2load: %v\n%s", err, out)
	}
	m := h2DoneRE.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no summary\n%s", out)
	}
	done, _ := strconv.ParseFloat(string(m[1]), 64)
	if string(m[3]) != "0" || done == 0 {
		return r, fmt.Errorf("h2load: %s of %s requests failed", m[3], m[1])
	}
	if m := h2RateRE.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	r.cpuPerReq = cpu.Seconds() * 1e6 / done
	r.p50, r.p99, err = logQuantiles(logf)
	return r, err
}

// logQuantiles reads h2load's log (start µs, status, duration µs per
// line) and returns p50 and p99 in ms.
func logQuantiles(path string) (p50, p99 float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var lat []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(fs[2], 64)
		if err == nil {
			lat = append(lat, v/1000)
		}
	}
	if len(lat) == 0 {
		return 0, 0, fmt.Errorf("h2load logged no requests")
	}
	sort.Float64s(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// reportHTTPS prints the HTTPS table with ratios to HAProxy.
func reportHTTPS(running []*proxy, res map[string]map[*proxy]httpsResult) {
	fmt.Println("\nHTTPS keep-alive (HTTP/1.1: wrk, " + strconv.Itoa(*conns) + " connections; HTTP/2: h2load, 16 connections × 16 streams):")
	fmt.Println("\n| protocol | proxy | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU/req vs HAProxy | req/s vs HAProxy |\n|---|---|---|---|---|---|---|---|")
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		var base *httpsResult
		for _, p := range running {
			if r := res[proto][p]; p.name == "haproxy" && r.err == "" {
				base = &r
			}
		}
		ratio := func(v, b float64) string {
			if base == nil || b == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f×", v/b)
		}
		for _, p := range running {
			r, ok := res[proto][p]
			if !ok {
				continue
			}
			if r.err != "" {
				fmt.Printf("| %s | %s | failed: %s |\n", proto, p.name, r.err)
				continue
			}
			var bc, br float64
			if base != nil {
				bc, br = base.cpuPerReq, base.rps
			}
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.1f | %s | %s |\n", proto, p.name, r.rps, r.p50, r.p99, r.cpuPerReq,
				ratio(r.cpuPerReq, bc), ratio(r.rps, br))
		}
	}
}
