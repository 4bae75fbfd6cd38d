// Package e2e drives the real gantry binary as a user would: the server,
// the CLI, real git over SSH and HTTP, real apps, HTTP and WebSocket
// clients through the router.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var gantryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gantry-e2e-bin")
	if err != nil {
		panic(err)
	}
	gantryBin = filepath.Join(dir, "gantry")
	out, err := exec.Command("go", "build", "-o", gantryBin, "../cmd/gantry").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building gantry: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps", c)
		}
	}
}

// env is one user's machine: a home directory with SSH keys and a CLI
// configuration.
type env struct {
	t    *testing.T
	home string
	cfg  string
	// bin runs the CLI instead of gantryBin (a wrapper that enters a
	// test machine's network namespace).
	bin string
}

// cli is the CLI's command.
func (e *env) cli() string {
	if e.bin != "" {
		return e.bin
	}
	return gantryBin
}

func newEnv(t *testing.T, cfg string) *env {
	home := t.TempDir()
	e := &env{t: t, home: home, cfg: cfg}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	e.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@gantry", "-f", filepath.Join(home, ".ssh", "id_ed25519"))
	return e
}

func (e *env) environ() []string {
	return append(os.Environ(),
		"HOME="+e.home,
		"GANTRY_CONFIG="+e.cfg,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Tester", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=Tester", "GIT_COMMITTER_EMAIL=t@example.com",
		// StrictHostKeyChecking=yes: the clone works only if `gantry sshkey
		// add` recorded the server's host key in ~/.ssh/known_hosts.
		"GIT_SSH_COMMAND="+e.sshCommand(),
		"GANTRY_SSH_COMMAND="+e.sshCommand(),
	)
}

func (e *env) sshCommand() string {
	return "ssh -F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" +
		filepath.Join(e.home, ".ssh", "known_hosts") + " -i " + filepath.Join(e.home, ".ssh", "id_ed25519")
}

// exec runs a command and returns its combined output and error.
func (e *env) exec(dir string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = e.environ()
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// execIn is exec with stdin.
func (e *env) execIn(dir, stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = e.environ()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) run(name string, args ...string) string {
	e.t.Helper()
	out, err := e.exec("", name, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) runIn(dir, name string, args ...string) string {
	e.t.Helper()
	out, err := e.exec(dir, name, args...)
	if err != nil {
		e.t.Fatalf("(in %s) %s %s: %v\n%s", dir, name, strings.Join(args, " "), err, out)
	}
	return out
}

// gantry runs the CLI and fails the test on error.
func (e *env) gantry(args ...string) string {
	e.t.Helper()
	return e.run(e.cli(), args...)
}

// gantryFails runs the CLI, expects it to fail, and returns its output.
func (e *env) gantryFails(args ...string) string {
	e.t.Helper()
	out, err := e.exec("", e.cli(), args...)
	if err == nil {
		e.t.Fatalf("gantry %s succeeded; want failure\n%s", strings.Join(args, " "), out)
	}
	return out
}

func (e *env) gantryJSON(v any, args ...string) {
	e.t.Helper()
	cmd := exec.Command(e.cli(), append(args, "--json")...)
	cmd.Env = e.environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("gantry %s --json: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(out, v); err != nil {
		e.t.Fatalf("gantry %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// server is a running `gantry server`.
type server struct {
	t         *testing.T
	cmd       *exec.Cmd
	data      string
	cfg       string
	httpAddr  string
	sshAddr   string
	httpsAddr string
	log       *bytes.Buffer
	exited    chan struct{}
	// servings counts "gantry is serving" lines: a SIGHUP hand-off's new
	// process writes to the same stderr.
	servings atomic.Int32
}

var servingRE = regexp.MustCompile(`msg="gantry is serving" http=(\S+) ssh=(\S+) https=(\S+)`)

// startServer starts the server on the given addresses (127.0.0.1:0 for
// fresh ports) and waits until it serves.
func startServer(t *testing.T, data, cfg, httpAddr, sshAddr string, extra ...string) *server {
	t.Helper()
	return startServerVia(t, nil, data, cfg, httpAddr, sshAddr, extra...)
}

// startServerVia starts the server through a wrapper command (e.g. one
// that gives it a mount namespace of its own), which must exec its
// arguments.
func startServerVia(t *testing.T, wrapper []string, data, cfg, httpAddr, sshAddr string, extra ...string) *server {
	t.Helper()
	args := []string{"server", "--data", data, "--http", httpAddr, "--ssh", sshAddr, "--client-config", cfg, "--start-timeout", "8s"}
	if !slices.Contains(extra, "--https") {
		args = append(args, "--https", "127.0.0.1:0")
	}
	argv := append(append(append([]string(nil), wrapper...), gantryBin), append(args, extra...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GANTRY_CONFIG="+cfg)
	stderr, _ := cmd.StderrPipe()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, data: data, cfg: cfg, log: &bytes.Buffer{}, exited: make(chan struct{})}
	ready := make(chan [3]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.log.WriteString(line + "\n")
			if m := servingRE.FindStringSubmatch(line); m != nil {
				s.servings.Add(1)
				select {
				case ready <- [3]string{m[1], m[2], m[3]}:
				default:
				}
			}
		}
		cmd.Wait()
		close(s.exited)
	}()
	select {
	case addrs := <-ready:
		s.httpAddr, s.sshAddr, s.httpsAddr = addrs[0], addrs[1], addrs[2]
	case <-s.exited:
		t.Fatalf("server exited before serving:\n%s", s.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not start:\n%s", s.log.String())
	}
	t.Cleanup(func() { s.stop() })
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		// The goroutines' stacks (Go prints them on SIGQUIT) say where
		// the stop hangs.
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
		}
		s.t.Errorf("server did not stop on SIGTERM:\n%s", s.log.String())
	}
}

// killGears kills every process still running from data dir (the gears
// outlive the server by design): shims by their command line, apps by
// their environment, runc containers through runc.
func killGears(data string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(cmdline, []byte(data)) || bytes.Contains(environ, []byte(data)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	root := filepath.Join(data, "run", "runc")
	if out, err := exec.Command("runc", "--root", root, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", root, "delete", "-f", id).Run()
			removeGearCgroups(id)
		}
	}
	unmountUnder(data)
	gears, _ := os.ReadDir(filepath.Join(data, "gears"))
	for _, g := range gears {
		removeGearCgroups(g.Name())
	}
}

// unmountUnder unmounts what is mounted below dir (the apps' disks).
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var points []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// removeGearCgroups removes a gear's cgroups in every hierarchy, under
// whatever net prefix its server had.
func removeGearCgroups(id string) {
	for _, pattern := range []string{"/sys/fs/cgroup/*/*/" + id, "/sys/fs/cgroup/*/" + id} {
		dirs, _ := filepath.Glob(pattern)
		for _, d := range dirs {
			os.Remove(filepath.Join(d, "proc"))
			os.Remove(d)
		}
	}
}

// httpClient sends every *.localhost request to the router.
func (s *server) httpClient() *http.Client {
	host, port, _ := net.SplitHostPort(s.httpAddr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, net.JoinHostPort(host, port))
			},
			MaxIdleConnsPerHost: 16,
		},
	}
}

func (s *server) url(host, path string) string {
	_, port, _ := net.SplitHostPort(s.httpAddr)
	return "http://" + host + ":" + port + path
}

// get fetches a page through the router.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// eventually retries f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}
