// Command console measures what issue 19 aims at for the web console, on a
// server with 200 apps: the apps list and an app page served at the
// server (median and p99 over many loads), the total transfer of the
// first page (HTML and every asset it loads, compressed as served), and
// the server's CPU for the live updates of 50 open app pages (each polls
// its gears and state every 2 s and its charts every 5 s, as the page's
// scripts do).
//
//	go run ./bench/console [-apps 200 -pages 50 -d 30s]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

func main() {
	apps := flag.Int("apps", 200, "apps on the server")
	pages := flag.Int("pages", 50, "open app pages")
	d := flag.Duration("d", 30*time.Second, "how long the pages stay open")
	flag.Parse()
	if err := run(*apps, *pages, *d); err != nil {
		fmt.Fprintln(os.Stderr, "console:", err)
		os.Exit(1)
	}
}

func run(nApps, nPages int, d time.Duration) error {
	e, err := benchenv.Start("--isolation", "process")
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Printf("Making %d apps…\n", nApps)
	if _, err := e.CreateApp("web", ""); err != nil { // one deployed app
		return err
	}
	for i := 1; i < nApps; i++ {
		if _, err := e.Gantry("app", "create", fmt.Sprintf("app%03d", i)); err != nil {
			return err
		}
	}
	cmd := e.Command("", e.Bin, "user", "password", "--password-stdin")
	cmd.Stdin = strings.NewReader("bench console password\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("user password: %v: %s", err, out)
	}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{MaxIdleConnsPerHost: 256,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", e.HTTPAddr)
		}}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	host := "http://localhost" // the platform host, over loopback
	resp, err := hc.PostForm(host+"/console/signin", url.Values{"user": {"admin"}, "password": {"bench console password"}})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("sign-in: %s", resp.Status)
	}

	// Page times at the server: the request's whole round trip on
	// loopback, the body read.
	timeGET := func(path string, n int) (p50, p99 time.Duration, size int, err error) {
		var ds []time.Duration
		for i := 0; i < n; i++ {
			start := time.Now()
			r, err := hc.Get(host + path)
			if err != nil {
				return 0, 0, 0, err
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 {
				return 0, 0, 0, fmt.Errorf("%s: %s", path, r.Status)
			}
			ds = append(ds, time.Since(start))
			size = len(b)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[n/2], ds[n*99/100], size, nil
	}
	l50, l99, listSize, err := timeGET("/console/", 200)
	if err != nil {
		return err
	}
	a50, a99, appSize, err := timeGET("/console/apps/bench/web", 200)
	if err != nil {
		return err
	}

	// The first page's transfer: the HTML as served and every asset it
	// names, gzip-encoded as the console serves them to a browser.
	req, _ := http.NewRequest("GET", host+"/console/", nil)
	r, err := hc.Do(req)
	if err != nil {
		return err
	}
	html, _ := io.ReadAll(r.Body)
	r.Body.Close()
	total := len(html)
	var assets []string
	for _, m := range regexp.MustCompile(`(?:src|href)="(/console/assets/[^"]+)"`).FindAllSubmatch(html, -1) {
		assets = append(assets, string(m[1]))
	}
	for _, a := range assets {
		req, _ := http.NewRequest("GET", host+a, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		r, err := hc.Transport.RoundTrip(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		total += len(b)
	}

	// 50 open app pages: the server's CPU while they poll.
	fmt.Printf("Holding %d app pages open for %s…\n", nPages, d)
	cpu0 := cpuTime(e.ServerPID())
	ctx, cancel := context.WithTimeout(context.Background(), d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	polls := 0
	for i := 0; i < nPages; i++ {
		app := "/console/apps/bench/web"
		if i%2 == 1 {
			app = fmt.Sprintf("/console/apps/bench/app%03d", 1+i%(nApps-1))
		}
		wg.Add(1)
		go func(i int, app string) {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 2 * time.Second / time.Duration(nPages)) // pages opened at different times
			t2, t5 := time.NewTicker(2*time.Second), time.NewTicker(5*time.Second)
			defer t2.Stop()
			defer t5.Stop()
			get := func(p string) {
				if r, err := hc.Get(host + p); err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					mu.Lock()
					polls++
					mu.Unlock()
				}
			}
			for {
				select {
				case <-ctx.Done():
					return
				case <-t2.C:
					get(app + "/gears")
				case <-t5.C:
					get(app + "/stats.json")
				}
			}
		}(i, app)
	}
	wg.Wait()
	cancel()
	cpu := cpuTime(e.ServerPID()) - cpu0
	share := cpu.Seconds() / d.Seconds() * 100

	fmt.Printf("\nWeb console, %d apps on the server\n\n| measure | figure | aim |\n|---|---|---|\n", nApps)
	fmt.Printf("| apps list served (median / p99 of 200) | %s / %s (%d KiB of HTML) | < 50 ms |\n", ms(l50), ms(l99), listSize>>10)
	fmt.Printf("| app page served (median / p99 of 200) | %s / %s (%d KiB) | < 50 ms |\n", ms(a50), ms(a99), appSize>>10)
	fmt.Printf("| first page's transfer (HTML + %d assets, gzip) | %d KiB | < 300 KiB |\n", len(assets), total>>10)
	fmt.Printf("| server CPU for %d open app pages' live updates | %.1f%% of one core (%d polls in %s) | < 5%% |\n", nPages, share, polls, d)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// cpuTime is a process's user and system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
