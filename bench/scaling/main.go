// Command scaling measures Gantry's scaling: the latency of waking an idle
// app (first request to response) minus the app's own start-up time, i.e.
// the platform's overhead; the time from a load step to a new gear serving;
// and failed requests through a scale-up, scale-down and idle/wake cycle
// under steady load.
//
//	go run ./bench/scaling [-n 10] [-isolation auto|process|namespaces]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

const app = `const http = require("http");
http.createServer((req, res) => {
  if (req.url === "/slow") return setTimeout(() => res.end("slow\n"), 200);
  res.end("ok\n");
}).listen(process.env.PORT, process.env.IP);
`

func main() {
	n := flag.Int("n", 10, "wakes to measure")
	isolation := flag.String("isolation", "auto", "gear isolation: auto, namespaces or process")
	flag.Parse()
	if err := run(*n, *isolation); err != nil {
		fmt.Fprintln(os.Stderr, "scaling:", err)
		os.Exit(1)
	}
}

func run(n int, isolation string) error {
	e, err := benchenv.Start("--isolation", isolation, "--scale-down-after", "5s")
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.CreateApp("web", app); err != nil {
		return err
	}
	c := e.Client()
	url := "http://web-bench.localhost/"
	fmt.Printf("scaling, small Node.js app, isolation %s\n\n", isolation)

	// 1. Wake latency.
	var wakes []time.Duration
	for i := 0; i < n; i++ {
		if _, err := e.Gantry("app", "idle", "web", "--now"); err != nil {
			return err
		}
		t0 := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("wake %d: status %d", i, resp.StatusCode)
		}
		wakes = append(wakes, time.Since(t0))
	}
	start, err := benchenv.AppStart(e.Root, app, n)
	if err != nil {
		return err
	}
	fmt.Printf("  wake: first request to response      %8s (p90 %s)\n", pct(wakes, 50), pct(wakes, 90))
	fmt.Printf("  app's own start, without Gantry       %8s\n", pct(start, 50))
	fmt.Printf("  platform overhead of a wake           %8s (aim: ≤ 30ms)\n\n", pct(wakes, 50)-pct(start, 50))

	// 2. Load step to a new gear serving.
	if _, err := e.Gantry("app", "scale", "web", "--min", "1", "--max", "4", "--target-connections", "2"); err != nil {
		return err
	}
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	load := func(workers int, path string) {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := c.Get(url + path)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == 200 {
							ok.Add(1)
							continue
						}
					}
					failed.Add(1)
				}
			}()
		}
	}
	t0 := time.Now()
	load(8, "slow")
	for gears(e) < 2 {
		if time.Since(t0) > time.Minute {
			return fmt.Errorf("no new gear within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	step := time.Since(t0)
	for gears(e) < 4 && time.Since(t0) < 30*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	full := time.Since(t0)
	close(stop)
	wg.Wait()
	fmt.Printf("  load step (8 concurrent, target 2/gear) to a 2nd gear serving %8s, to 4 gears %s\n", step.Round(time.Millisecond), full.Round(time.Millisecond))

	// 3. Steady load through scale-up, scale-down, idle and wake.
	ok.Store(0)
	failed.Store(0)
	stop = make(chan struct{})
	load(4, "")
	steps := [][]string{{"--gears", "3"}, {"--gears", "1"}}
	for _, s := range steps {
		if _, err := e.Gantry(append([]string{"app", "scale", "web"}, s...)...); err != nil {
			return err
		}
		time.Sleep(time.Second)
	}
	for i := 0; i < 3; i++ {
		if _, err := e.Gantry("app", "idle", "web", "--now"); err != nil {
			return err
		}
		time.Sleep(time.Second)
	}
	close(stop)
	wg.Wait()
	fmt.Printf("  steady load through scale 1->3->1 and 3 idle/wake cycles: %d requests, %d failed\n", ok.Load(), failed.Load())
	return nil
}

func gears(e *benchenv.Env) int {
	out, err := e.Gantry("app", "show", "web", "--json")
	if err != nil {
		return 0
	}
	var a struct {
		Gears []struct{ State string } `json:"gears"`
	}
	json.Unmarshal([]byte(out), &a)
	n := 0
	for _, g := range a.Gears {
		if g.State == "running" {
			n++
		}
	}
	return n
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)].Round(time.Millisecond)
}
