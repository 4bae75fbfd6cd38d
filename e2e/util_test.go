package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

func io_ReadAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func mustGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	code, body := get(t, c, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %q", url, code, body)
	}
	return body
}

func jsonDecode(t *testing.T, r io.Reader, v any) {
	t.Helper()
	if err := json.NewDecoder(r).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func hookLog(t *testing.T, data string) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(data, "apps", "*", "data", "hooks.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		return strings.Join(strings.Fields(string(b)), " ")
	}
	return ""
}

func adminToken(t *testing.T, cfg string) string {
	t.Helper()
	var c struct {
		Token string `json:"token"`
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &c)
	return c.Token
}

func splitPort(addr string) (string, string) {
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}

func execCommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// isolationArgs are the server flags of an isolation mode; namespaces need
// root and use a network of their own, apart from any real server's.
func isolationArgs(t *testing.T, mode string) []string {
	if mode == "process" {
		return []string{"--isolation", "process"}
	}
	if os.Geteuid() != 0 {
		t.Skip("namespaced gears need root (CI runs as root)")
	}
	for _, c := range []string{"runc", "nft"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps", c)
		}
	}
	prefix := "ge" + strconv.Itoa(os.Getpid()%10000)
	return []string{"--isolation", "namespaces", "--net-prefix", prefix, "--gear-subnet", "10.232.0.0/16"}
}

// cleanupNetwork removes a namespaced run's bridge, namespaces and tables.
func cleanupNetwork(isolation []string) {
	for i, a := range isolation {
		if a == "--net-prefix" {
			netplan.RemoveAll(isolation[i+1])
		}
	}
}

// gearPID is the host pid of the app's first gear process.
func gearPID(t *testing.T, u *env, app string) int {
	t.Helper()
	var a appJSON
	u.gantryJSON(&a, "app", "show", app)
	if len(a.Gears) == 0 {
		return 0
	}
	return a.Gears[0].PID
}

func namespaced(isolation []string) bool {
	for _, a := range isolation {
		if a == "namespaces" {
			return true
		}
	}
	return false
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func newAuthRequest(method, url, token string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, nil)
	if err == nil {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, err
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// load is a steady load of sequential GETs from several workers.
type load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

// startLoad sends GET url from workers goroutines until Stop.
func startLoad(c *http.Client, url string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, err = io_ReadAll(resp)
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

// Stop ends the load and waits for the workers.
func (l *load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// deployNodeApp is a user's first steps: an SSH key, a domain, a Node.js
// app cloned, nodeApp("v1") committed and pushed. It returns the app and
// the clone's directory.
func deployNodeApp(t *testing.T, u *env, domain, name string) (appJSON, string) {
	t.Helper()
	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", domain)
	var a appJSON
	u.gantryJSON(&a, "app", "create", name, "--type", "nodejs")
	work := t.TempDir()
	u.runIn(work, "git", "clone", "-q", a.GitURL, name)
	repo := filepath.Join(work, name)
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v1"), 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v1")
	u.runIn(repo, "git", "push", "-q")
	return a, repo
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// namespacedUser starts a server with namespaced gears (as root) and
// extra flags, and returns it with a user who has an SSH key and the
// domain acme: the first steps of most deploy tests.
func namespacedUser(t *testing.T, extra ...string) (*server, *env) {
	t.Helper()
	isolation := isolationArgs(t, "auto")
	root := t.TempDir()
	// Like /var/lib: apps' users may traverse to their own directories
	// (an image's gear mounts them as the app's user).
	os.Chmod(root, 0o711)
	os.Chmod(filepath.Dir(root), 0o711)
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", append(isolation, extra...)...)
	u := newEnv(t, cfg)
	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "acme")
	return srv, u
}

// peerNamespace makes a network namespace for a peer of the server (a
// log server, a registry) named prefix+pid, joined to this one by a veth:
// this side hostCIDR, the namespace's side nsCIDR. It returns its name;
// the test's end removes it.
func peerNamespace(t *testing.T, prefix, hostCIDR, nsCIDR string) string {
	t.Helper()
	ns := fmt.Sprintf("%s%d", prefix, os.Getpid()%10000)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	exec.Command("ip", "netns", "del", ns).Run()
	exec.Command("ip", "link", "del", ns+"h").Run()
	sh("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run(); exec.Command("ip", "link", "del", ns+"h").Run() })
	sh("ip", "link", "add", ns+"h", "type", "veth", "peer", "name", ns+"n")
	sh("ip", "link", "set", ns+"n", "netns", ns)
	sh("ip", "addr", "add", hostCIDR, "dev", ns+"h")
	sh("ip", "link", "set", ns+"h", "up")
	sh("ip", "netns", "exec", ns, "ip", "addr", "add", nsCIDR, "dev", ns+"n")
	sh("ip", "netns", "exec", ns, "ip", "link", "set", ns+"n", "up")
	return ns
}
