// Command pushlive measures push-to-live time for a small Node.js app with
// no dependencies, split into git transfer, build, and platform overhead
// (start, health check, route switch), and compares the release phase with
// the app's own start-up time measured without Gantry.
//
//	go run ./bench/pushlive [-n 10]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

const app = `const http = require("http");
http.createServer((req, res) => res.end("VERSION\n")).listen(process.env.PORT, process.env.IP);
`

func main() {
	n := flag.Int("n", 10, "pushes to measure")
	isolation := flag.String("isolation", "auto", "gear isolation of the server: auto, namespaces or process")
	flag.Parse()
	if err := run(*n, *isolation); err != nil {
		fmt.Fprintln(os.Stderr, "pushlive:", err)
		os.Exit(1)
	}
}

func run(n int, isolation string) error {
	e, err := benchenv.Start("--isolation", isolation)
	if err != nil {
		return err
	}
	defer e.Close()
	repo, err := e.CreateApp("web", "")
	if err != nil {
		return err
	}
	client := e.Client()
	sh := e.Run

	buildRE := regexp.MustCompile(`Build finished in (\S+);`)
	releaseRE := regexp.MustCompile(`Released in (\S+)`)
	var total, build, release, transfer []time.Duration
	for i := 0; i < n; i++ {
		version := fmt.Sprintf("v%d", i)
		os.WriteFile(filepath.Join(repo, "server.js"), []byte(strings.Replace(app, "VERSION", version, 1)), 0o644)
		if _, err := sh(repo, "git", "commit", "-qam", version); err != nil {
			return err
		}
		start := time.Now()
		out, err := sh(repo, "git", "push", "-q")
		if err != nil {
			return err
		}
		pushed := time.Since(start)
		// Live: the first request answers with the new version.
		for {
			resp, err := client.Get("http://web-bench.localhost/")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.TrimSpace(string(body)) == version {
					break
				}
			}
			if time.Since(start) > time.Minute {
				return fmt.Errorf("push %d never went live", i)
			}
			time.Sleep(time.Millisecond)
		}
		live := time.Since(start)
		b := parse(buildRE, out)
		r := parse(releaseRE, out)
		total = append(total, live)
		build = append(build, b)
		release = append(release, r)
		transfer = append(transfer, pushed-b-r)
	}
	startup, err := benchenv.AppStart(e.Root, strings.Replace(app, "VERSION", "x", 1), n)
	if err != nil {
		return err
	}
	fmt.Printf("push-to-live, small Node.js app, no dependencies, %d pushes (median / p90), isolation %s\n\n", n, isolation)
	row := func(name string, d []time.Duration, note string) {
		fmt.Printf("  %-34s %8s / %-8s %s\n", name, med(d), p90(d), note)
	}
	row("total (git push to new page)", total, "")
	row("git transfer + ssh + hook", transfer, "(push wall time - build - release)")
	row("build (checkout, detect, hooks)", build, "")
	row("release (start, health, switch)", release, "")
	row("  app's own start, without Gantry", startup, "(node server.js until it accepts)")
	overhead := make([]time.Duration, len(release))
	for i := range release {
		overhead[i] = release[i] - med(startup)
	}
	row("  platform overhead in release", overhead, "(release - app's own start)")
	fmt.Printf("\n  ratio release / app start: %.2f\n", float64(med(release))/float64(med(startup)))
	return nil
}

func parse(re *regexp.Regexp, out string) time.Duration {
	m := re.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	d, _ := time.ParseDuration(m[1])
	return d
}

func med(d []time.Duration) time.Duration { return pct(d, 50) }
func p90(d []time.Duration) time.Duration { return pct(d, 90) }

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Round(100 * time.Microsecond)
}
