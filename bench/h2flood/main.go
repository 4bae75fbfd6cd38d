// Command h2flood measures what an HTTP/2 rapid-reset flood (CVE-2023-44487:
// a stream opened and reset at once, again and again) does to a router's
// memory: it starts the router as `gantry server` does, with one app,
// floods its HTTPS port from N connections for a while, and prints the
// router process's resident memory before, at the end of the flood and
// some seconds after, and whether a normal request is served meanwhile.
//
//	go run ./bench/h2flood [-c 20] [-d 10s] [-after 10s]
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
	"github.com/gantry-paas/gantry/internal/h2test"
)

var (
	conns = flag.Int("c", 20, "flooding connections")
	dur   = flag.Duration("d", 10*time.Second, "flood duration")
	after = flag.Duration("after", 10*time.Second, "how long to wait after the flood before the last reading")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "h2flood:", err)
		os.Exit(1)
	}
}

func run() error {
	e, err := benchenv.Start("--isolation", "process")
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.CreateApp("flood", ""); err != nil {
		return err
	}
	host := "flood-bench.localhost"
	pid := e.ServerPID()
	tlsAddr := e.HTTPSAddr
	fmt.Printf("bench/h2flood: %d connections, %v of HEADERS+RST_STREAM to %s, server pid %d\n", *conns, *dur, tlsAddr, pid)
	fmt.Printf("  RSS before:          %6.1f MiB\n", rss(pid))
	var streams, errs atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n, err := h2test.ResetFlood(ctx, tlsAddr, host, 0)
				streams.Add(n)
				if err != nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	// A normal request from another client during the flood.
	time.Sleep(*dur / 2)
	served := probe(tlsAddr, host)
	wg.Wait()
	fmt.Printf("  streams opened and reset: %d (%d connection errors)\n", streams.Load(), errs.Load())
	fmt.Printf("  RSS at the flood's end:  %6.1f MiB; a normal request during the flood: %s\n", rss(pid), served)
	time.Sleep(*after)
	fmt.Printf("  RSS %v after:        %6.1f MiB\n", *after, rss(pid))
	return nil
}

func probe(addr, host string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: host},
		DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
			// Another client than the flood's (127.0.0.1).
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			return tls.DialWithDialer(d, network, addr, cfg)
		}}}
	start := time.Now()
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		return "failed: " + err.Error()
	}
	resp.Body.Close()
	return fmt.Sprintf("%d in %v", resp.StatusCode, time.Since(start).Round(time.Millisecond))
}

// rss is a process's resident memory in MiB.
func rss(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
