// Command pushlive measures push-to-live time for a small Node.js app with
// no dependencies, split into git transfer, build, and platform overhead
// (start, health check, route switch), and compares the release phase with
// the app's own start-up time measured without Gantry.
//
//	go run ./bench/pushlive [-n 10]
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
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

const app = `const http = require("http");
http.createServer((req, res) => res.end("VERSION\n")).listen(process.env.PORT, process.env.IP);
`

func main() {
	n := flag.Int("n", 10, "pushes to measure")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "pushlive:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	root, err := os.MkdirTemp("", "gantry-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	bin := filepath.Join(root, "gantry")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/gantry").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	home := filepath.Join(root, "home")
	data := filepath.Join(root, "data")
	cfg := filepath.Join(root, "cfg.json")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	env := append(os.Environ(), "HOME="+home, "GANTRY_CONFIG="+cfg,
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b",
		"GIT_SSH_COMMAND=ssh -F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile="+home+"/.ssh/known_hosts -i "+home+"/.ssh/id_ed25519")

	srv := exec.Command(bin, "server", "--data", data, "--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0", "--client-config", cfg)
	srv.Env = env
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
		killUnder(data)
	}()
	httpAddr, err := waitServing(stderr)
	if err != nil {
		return err
	}
	sh := func(dir string, name string, args ...string) (string, error) {
		c := exec.Command(name, args...)
		c.Dir, c.Env = dir, env
		out, err := c.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out), nil
	}
	steps := [][]string{
		{"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", home + "/.ssh/id_ed25519"},
		{bin, "sshkey", "add", home + "/.ssh/id_ed25519.pub"},
		{bin, "domain", "create", "bench"},
	}
	for _, s := range steps {
		if _, err := sh(root, s[0], s[1:]...); err != nil {
			return err
		}
	}
	out, err := sh(root, bin, "app", "create", "web", "--type", "nodejs", "--json")
	if err != nil {
		return err
	}
	var created struct {
		GitURL string `json:"git_url"`
	}
	json.Unmarshal([]byte(out), &created)
	if _, err := sh(root, "git", "clone", "-q", created.GitURL, "web"); err != nil {
		return err
	}
	repo := filepath.Join(root, "web")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", httpAddr)
		}}}

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
	startup, err := appStartup(root, n)
	if err != nil {
		return err
	}
	fmt.Printf("push-to-live, small Node.js app, no dependencies, %d pushes (median / p90)\n\n", n)
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

// appStartup measures how long `node server.js` takes to accept a
// connection when started directly.
func appStartup(root string, n int) ([]time.Duration, error) {
	dir := filepath.Join(root, "direct")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(strings.Replace(app, "VERSION", "x", 1)), 0o644)
	var out []time.Duration
	for i := 0; i < n; i++ {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command("node", "server.js")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PORT="+port, "IP=127.0.0.1")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		for {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			time.Sleep(time.Millisecond)
		}
		out = append(out, time.Since(start))
		cmd.Process.Kill()
		cmd.Wait()
	}
	return out, nil
}

func waitServing(r io.Reader) (string, error) {
	re := regexp.MustCompile(`msg="gantry is serving" http=(\S+)`)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, r)
			return m[1], nil
		}
	}
	return "", fmt.Errorf("server exited before serving")
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

// killUnder kills processes (gears) whose command line mentions dir.
func killUnder(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmdline), dir) {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
