// Package benchenv starts a real Gantry server for benchmarks and drives it
// as a user: an SSH key, a domain, an app cloned and pushed with git.
package benchenv

import (
	"bufio"
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
	"strings"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

// Env is a running server and a user's home beside it.
type Env struct {
	Root, Bin, Home, Data string
	HTTPAddr, HTTPSAddr   string
	netPrefix             string
	env                   []string
	srv                   *exec.Cmd
}

// Start builds gantry and starts `gantry server` with extra flags.
func Start(extra ...string) (*Env, error) {
	root, err := os.MkdirTemp("", "gantry-bench")
	if err != nil {
		return nil, err
	}
	e := &Env{Root: root, Bin: filepath.Join(root, "gantry"), Home: filepath.Join(root, "home"), Data: filepath.Join(root, "data")}
	if out, err := exec.Command("go", "build", "-o", e.Bin, "./cmd/gantry").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build (run from the repository root): %v\n%s", err, out)
	}
	cfg := filepath.Join(root, "cfg.json")
	os.MkdirAll(filepath.Join(e.Home, ".ssh"), 0o700)
	ssh := "ssh -F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile=" + e.Home + "/.ssh/known_hosts -i " + e.Home + "/.ssh/id_ed25519"
	e.env = append(os.Environ(), "HOME="+e.Home, "GANTRY_CONFIG="+cfg, "GIT_SSH_COMMAND="+ssh, "GANTRY_SSH_COMMAND="+ssh,
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
	// A network of its own (namespace mode), apart from any real server's.
	e.netPrefix = fmt.Sprintf("gbe%d", os.Getpid()%10000)
	e.srv = exec.Command(e.Bin, append([]string{"server", "--data", e.Data, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--ssh", "127.0.0.1:0", "--client-config", cfg,
		"--net-prefix", e.netPrefix, "--gear-subnet", "10.235.0.0/16", "--max-client-conns", "0"}, extra...)...)
	e.srv.Env = e.env
	stderr, _ := e.srv.StderrPipe()
	if err := e.srv.Start(); err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`msg="gantry is serving" http=(\S+) ssh=\S+ https=(\S+)`)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			e.HTTPAddr, e.HTTPSAddr = m[1], m[2]
			go io.Copy(io.Discard, stderr)
			break
		}
	}
	if e.HTTPAddr == "" {
		e.Close()
		return nil, fmt.Errorf("server exited before serving")
	}
	for _, s := range [][]string{
		{"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", e.Home + "/.ssh/id_ed25519"},
		{e.Bin, "sshkey", "add", e.Home + "/.ssh/id_ed25519.pub"},
		{e.Bin, "domain", "create", "bench"},
	} {
		if _, err := e.Run(root, s[0], s[1:]...); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Run runs a command in dir with the user's environment.
func (e *Env) Run(dir, name string, args ...string) (string, error) {
	c := exec.Command(name, args...)
	c.Dir, c.Env = dir, e.env
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out), nil
}

// Gantry runs the CLI.
func (e *Env) Gantry(args ...string) (string, error) { return e.Run(e.Root, e.Bin, args...) }

// CreateApp creates a Node.js app, clones it, writes server.js and pushes.
// It returns the clone's directory.
func (e *Env) CreateApp(name, serverJS string, createArgs ...string) (string, error) {
	out, err := e.Gantry(append([]string{"app", "create", name, "--type", "nodejs", "--json"}, createArgs...)...)
	if err != nil {
		return "", err
	}
	var created struct {
		GitURL string `json:"git_url"`
	}
	json.Unmarshal([]byte(out), &created)
	if _, err := e.Run(e.Root, "git", "clone", "-q", created.GitURL, name); err != nil {
		return "", err
	}
	repo := filepath.Join(e.Root, name)
	if serverJS != "" {
		os.WriteFile(filepath.Join(repo, "server.js"), []byte(serverJS), 0o644)
		if _, err := e.Run(repo, "git", "commit", "-qam", "bench"); err != nil {
			return "", err
		}
		if _, err := e.Run(repo, "git", "push", "-q"); err != nil {
			return "", err
		}
	}
	return repo, nil
}

// ServerPID is the server process's pid.
func (e *Env) ServerPID() int { return e.srv.Process.Pid }

// Client sends every request to the router.
func (e *Env) Client() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", e.HTTPAddr)
		}}}
}

// Close stops the server and the gears, and removes the files.
func (e *Env) Close() {
	if e.srv != nil && e.srv.Process != nil {
		e.srv.Process.Signal(syscall.SIGTERM)
		e.srv.Wait()
	}
	KillUnder(e.Data)
	for _, id := range runcContainers(filepath.Join(e.Data, "run", "runc")) {
		exec.Command("runc", "--root", filepath.Join(e.Data, "run", "runc"), "delete", "-f", id).Run()
	}
	netplan.RemoveAll(e.netPrefix)
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil { // the apps' disks
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], e.Data+"/") {
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
	}
	gears, _ := os.ReadDir(filepath.Join(e.Data, "gears"))
	for _, g := range gears {
		sandbox.RemoveCgroup(netplan.Plan{Prefix: e.netPrefix}.Normalize().Prefix + "/" + g.Name())
	}
	os.RemoveAll(e.Root)
}

func runcContainers(root string) []string {
	out, err := exec.Command("runc", "--root", root, "list", "-q").Output()
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

// KillUnder kills processes whose command line or environment mentions
// dir (gears outlive the server by design).
func KillUnder(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		cmdline, _ := os.ReadFile("/proc/" + en.Name() + "/cmdline")
		environ, _ := os.ReadFile("/proc/" + en.Name() + "/environ")
		if strings.Contains(string(cmdline), dir) || strings.Contains(string(environ), dir) {
			var pid int
			fmt.Sscan(en.Name(), &pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// AppStart measures how long `node server.js` (serverJS) takes to accept
// a TCP connection when started directly, without Gantry: the app's own
// start-up time, to subtract from the platform's figures.
func AppStart(root, serverJS string, n int) ([]time.Duration, error) {
	dir := filepath.Join(root, "direct")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "server.js"), []byte(serverJS), 0o644); err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command("node", "server.js")
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "PORT="+port, "IP=127.0.0.1")
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

// Command is a command in dir with the user's environment, to run as the
// caller likes (stdin, say).
func (e *Env) Command(dir, name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Dir, c.Env = dir, e.env
	if dir == "" {
		c.Dir = e.Root
	}
	return c
}
