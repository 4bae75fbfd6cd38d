package e2e

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	_ "modernc.org/sqlite"

	"github.com/gantry-paas/gantry/internal/egress/dns/dnstest"
	"github.com/gantry-paas/gantry/internal/h2test"
)

// The hostile-tenant tests: what a tenant (or anyone on the network) tried
// against a shared server, each a regression test of a hole that was found.

// hostile is one server with two ordinary users, alice and bob.
type hostile struct {
	srv          *server
	admin        *env
	alice, bob   *env
	root, data   string
	aliceApp     appJSON
	aliceRepo    string
	httpPort     string
	adminToken   string
	serverExtras []string
}

func newHostile(t *testing.T, extra ...string) *hostile {
	need(t, "git", "ssh", "ssh-keygen", "node")
	h := &hostile{root: t.TempDir()}
	h.data = filepath.Join(h.root, "data")
	t.Cleanup(func() { killGears(h.data) })
	cfg := filepath.Join(h.root, "admin.json")
	h.srv = startServer(t, h.data, cfg, "127.0.0.1:0", "127.0.0.1:0", append([]string{"--isolation", "process"}, extra...)...)
	_, h.httpPort = splitPort(h.srv.httpAddr)
	h.admin = newEnv(t, cfg)
	h.adminToken = adminToken(t, cfg)
	for _, name := range []string{"alice", "bob"} {
		var u struct {
			Token string `json:"token"`
		}
		h.admin.gantryJSON(&u, "user", "create", name)
		e := newEnv(t, filepath.Join(h.root, name+".json"))
		e.gantry("login", "--server", "http://"+h.srv.httpAddr, "--token", u.Token)
		if name == "alice" {
			h.alice = e
		} else {
			h.bob = e
		}
	}
	return h
}

// getFrom sends GET http://host/path to the router from the local address
// src (a 127.0.0.0/8 address), on a connection of its own.
func getFrom(src, routerAddr, host, path string) (int, string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		Dial:              func(network, addr string) (net.Conn, error) { return d.Dial(network, routerAddr) },
	}}
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestHostileFlood: idle connections from one address (as many as a
// client can open) neither take the HTTP port down nor stay open for
// minutes: past the per-client cap they are reset, silent ones are closed
// after the header timeout, and other clients are served meanwhile.
func TestHostileFlood(t *testing.T) {
	const limit = 300
	h := newHostile(t, "--max-client-conns", fmt.Sprint(limit), "--header-timeout", "2s")
	deployNodeApp(t, h.alice, "alice", "web")
	host := "web-alice.localhost"

	const flood = 3000
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := time.Now()
	for i := 0; i < flood; i++ {
		c, err := net.Dial("tcp", h.srv.httpAddr)
		if err != nil {
			continue // reset before the dial returned: refused, as wanted
		}
		conns = append(conns, c)
	}
	// Served meanwhile: another client, the app and the API.
	if code, body, err := getFrom("127.0.0.2", h.srv.httpAddr, host, "/"); err != nil || code != 200 || !strings.HasPrefix(body, "v1") {
		t.Fatalf("during the flood, another client's request: %d %q %v; want 200 v1", code, body, err)
	}
	if code, _, err := getFrom("127.0.0.2", h.srv.httpAddr, "127.0.0.1", "/openapi.json"); err != nil || code != 200 {
		t.Fatalf("during the flood, the API: %d %v; want 200", code, err)
	}
	// The flood held at most the cap, however many it opened; the rest
	// were reset at once (the resets may still be on their way: a moment).
	time.Sleep(200 * time.Millisecond)
	open := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	if open > limit {
		t.Errorf("one address holds %d open connections; want at most %d", open, limit)
	}
	// Silent connections are closed after the header timeout (2 s here),
	// not after minutes.
	eventually(t, "silent connections closed by the server", 30*time.Second, func() error {
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return fmt.Errorf("a connection opened %v ago is still open", time.Since(opened).Round(time.Second))
				}
			}
		}
		return nil
	})
	// The flooding address itself is served again.
	if code, body, err := getFrom("127.0.0.1", h.srv.httpAddr, host, "/"); err != nil || code != 200 || !strings.HasPrefix(body, "v1") {
		t.Fatalf("after the flood: %d %q %v; want 200 v1", code, body, err)
	}
	// Counted and logged.
	req, _ := newAuthRequest("GET", "http://"+h.srv.httpAddr+"/metrics", h.adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `gantry_router_connections_refused_total{listener="http",reason="per-source"}`) {
		t.Errorf("metrics lack the refused connections:\n%s", grepLines(string(metrics), "refused"))
	}
	if !strings.Contains(h.srv.log.String(), "too many open connections from one address") {
		t.Errorf("no log line for the refused connections")
	}
}

// TestHostilePush: links in a push never make the builder (root) read or
// list anything outside the checkout, the push is refused with a message
// that names the file, and the running app stays as it was.
func TestHostilePush(t *testing.T) {
	h := newHostile(t)
	_, repo := deployNodeApp(t, h.alice, "alice", "web")
	host := "web-alice.localhost"
	c := h.srv.httpClient()
	cases := []struct {
		name  string
		setup func()
	}{
		{"procfile-shadow", func() { os.Symlink("/etc/shadow", filepath.Join(repo, "Procfile")) }},
		{"procfile-environ", func() { os.Symlink("/proc/self/environ", filepath.Join(repo, "Procfile")) }},
		{"procfile-data", func() { os.Symlink(filepath.Join(h.data, "gantry.db"), filepath.Join(repo, "Procfile")) }},
		{"hooks-dir", func() {
			os.RemoveAll(filepath.Join(repo, ".gantry", "action_hooks")) // the starter's
			os.MkdirAll(filepath.Join(repo, ".gantry"), 0o755)
			os.Symlink(filepath.Join(h.data, "apps"), filepath.Join(repo, ".gantry", "action_hooks"))
		}},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			h.alice.runIn(repo, "git", "reset", "-q", "--hard", "origin/main")
			cs.setup()
			h.alice.runIn(repo, "git", "add", "-A")
			h.alice.runIn(repo, "git", "commit", "-qm", cs.name)
			out, err := h.alice.exec(repo, "git", "push")
			if err == nil {
				t.Fatalf("push accepted:\n%s", out)
			}
			if !strings.Contains(out, "leads out of the repository") {
				t.Errorf("push output does not say why:\n%s", out)
			}
			for _, leak := range []string{"root:", "PATH=", "SQLite", "GANTRY"} {
				if strings.Contains(out, leak) {
					t.Errorf("push output quotes %q from outside the checkout:\n%s", leak, out)
				}
			}
			if code, body := get(t, c, h.srv.url(host, "/")); code != 200 || !strings.HasPrefix(body, "v1") {
				t.Errorf("after the refused push: %d %q; want v1 still serving", code, body)
			}
		})
	}
}

// TestHostileHostnames: a name alice serves (exactly, as the apex that
// redirects to her www. alias, or under her wildcard) cannot be taken by
// bob, whose more exact name would otherwise win in the router.
func TestHostileHostnames(t *testing.T) {
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	h.admin.gantry("admin", "alias", "grant", "alice", "alice.test")
	h.admin.gantry("admin", "alias", "grant", "alice", "wild.test")
	h.admin.gantry("admin", "alias", "grant", "bob", "bob.test")
	h.alice.gantry("alias", "add", "web", "www.alice.test")
	h.alice.gantry("alias", "add", "web", "*.wild.test")
	h.bob.gantry("domain", "create", "bob")
	h.bob.gantry("app", "create", "x", "--type", "static")
	for _, name := range []string{"alice.test", "a.wild.test", "www.alice.test", "*.alice.test", "www.a.wild.test"} {
		if out := h.bob.gantryFails("alias", "add", "x", name); !strings.Contains(out, "another user") {
			t.Errorf("bob adding %s: %q; want a refusal that names another user", name, out)
		}
	}
	h.bob.gantry("alias", "add", "x", "www.bob.test")
	if out := h.alice.gantryFails("alias", "add", "web", "bob.test"); !strings.Contains(out, "another user") {
		t.Errorf("alice taking bob's apex: %q", out)
	}
	// Alice's traffic is still hers.
	noRedirect := h.srv.httpClient()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Get(h.srv.url("alice.test", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || !strings.Contains(loc, "www.alice.test") {
		t.Errorf("alice.test: %d %q; want a redirect to www.alice.test", resp.StatusCode, loc)
	}
	if code, body := get(t, h.srv.httpClient(), h.srv.url("a.wild.test", "/")); code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("a.wild.test: %d %q; want alice's app", code, body)
	}
}

// rawRequest sends req on a new connection to the router and returns the
// whole response (the router closes after it).
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestHostileHeaders: a client that is no trusted proxy cannot pass the
// app a client address of its choosing (Forwarded, X-Real-IP, as
// X-Forwarded-* already were), on the fast path or on net/http's, and a
// Content-Length net/http would refuse is refused, not forwarded.
func TestHostileHeaders(t *testing.T) {
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	host := "web-alice.localhost"
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} { // 1.0 goes through net/http
		resp := rawRequest(t, h.srv.httpAddr, "GET /headers "+proto+"\r\nHost: "+host+"\r\nForwarded: for=6.6.6.6\r\n"+
			"X-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n")
		if !strings.Contains(resp, " 200 ") || strings.Contains(resp, "6.6.6.6") || !strings.Contains(resp, `"x-real-ip":"127.0.0.1"`) {
			t.Errorf("%s: the app saw headers the client chose:\n%s", proto, resp)
		}
	}
	for _, cl := range []string{"+44", "-0", "0x10", "1 2"} {
		resp := rawRequest(t, h.srv.httpAddr, "POST / HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: "+cl+"\r\n\r\n"+strings.Repeat("x", 44))
		if !strings.HasPrefix(resp, "HTTP/1.1 400 ") {
			t.Errorf("Content-Length: %s answered %q; want 400", cl, firstLine(resp))
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestCrashLoopingGearLeavesTheRoute: with two gears, one crashing at
// every start (waiting in the shim's back-off between), no request fails:
// the router sends the one that met the refusal to the other gear and
// keeps the crashing gear out of the balancing.
func TestCrashLoopingGearLeavesTheRoute(t *testing.T) {
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	crashDir, err := os.MkdirTemp("", "gantry-crash")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(crashDir)
	os.Chmod(crashDir, 0o755)
	h.alice.gantry("env", "set", "web", "CRASH_DIR="+crashDir)
	h.alice.gantry("app", "scale", "web", "--gears", "2")
	var a appJSON
	h.alice.gantryJSON(&a, "app", "show", "web")
	if len(a.Gears) != 2 {
		t.Fatalf("gears %+v; want 2", a.Gears)
	}
	victim := a.Gears[0]
	writeFile(t, filepath.Join(crashDir, fmt.Sprint(victim.Port)), "", 0o644)
	// Kill the victim's process: it restarts into the crash file, again
	// and again.
	victimAddr := net.JoinHostPort(victim.IP, fmt.Sprint(victim.Port))
	code, _, err := getFrom("127.0.0.1", victimAddr, "x", "/crash")
	if err != nil || code != 200 {
		t.Fatalf("crashing the gear: %d %v", code, err)
	}
	// Requests in flight when a process dies fail with it (as with any
	// proxy); what is measured starts once it is gone.
	eventually(t, "the crashed gear's port refuses", 10*time.Second, func() error {
		if c, err := net.Dial("tcp", victimAddr); err == nil {
			c.Close()
			return fmt.Errorf("%s still accepts", victimAddr)
		}
		return nil
	})
	c := h.srv.httpClient()
	failed := 0
	var first string
	for i := 0; i < 200; i++ {
		resp, err := c.Get(h.srv.url("web-alice.localhost", "/"))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			failed++
			if first == "" {
				first = err.Error()
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if failed > 0 {
		t.Errorf("%d of 200 requests failed while a gear crash-looped (first: %s)", failed, first)
	}
	if !strings.Contains(h.srv.log.String(), "out of the route until it listens again") {
		t.Errorf("the router did not say it took the gear out")
	}
}

// TestLockedStore: while another process holds the server's database, API
// calls end after a bounded wait with "busy" and what to do (never "invalid
// API token", never a hang), and work again once it is released.
func TestLockedStore(t *testing.T) {
	h := newHostile(t)
	h.alice.gantry("domain", "create", "alice")
	db, err := sql.Open("sqlite", "file:"+filepath.Join(h.data, "gantry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	out := h.alice.gantryFails("app", "list")
	conn.ExecContext(context.Background(), "ROLLBACK")
	if !strings.Contains(out, "busy") || strings.Contains(out, "token") {
		t.Errorf("while the database is locked: %q; want a store-busy answer", out)
	}
	h.alice.gantry("app", "list")
}

// TestCLIKeepsTokensOffPlainHTTP: the CLI does not send a token over
// http:// to a server that is not on this machine, unless told --insecure.
func TestCLIKeepsTokensOffPlainHTTP(t *testing.T) {
	u := newEnv(t, filepath.Join(t.TempDir(), "cfg.json"))
	// paas.test resolves nowhere: the CLI must refuse before any lookup.
	out := u.gantryFails("login", "--server", "http://paas.test:8080", "--token", "gnt_secret")
	if !strings.Contains(out, "plain HTTP") || strings.Contains(out, "cannot reach") {
		t.Errorf("login over plain HTTP: %q; want a refusal before any connection", out)
	}
}

// TestKillNineMidChange: the server killed with SIGKILL in the middle of a
// push and of a scale-up. At the next start, the push's deployment
// directory is gone, the gears the scale left "starting" are undone (the
// app runs what it ran before), and later changes route only live gears.
func TestKillNineMidChange(t *testing.T) {
	h := newHostile(t)
	_, repo := deployNodeApp(t, h.alice, "alice", "web")
	host := "web-alice.localhost"
	cfg := filepath.Join(h.root, "admin.json")
	restart := func() {
		t.Helper()
		h.srv.cmd.Process.Kill()
		<-h.srv.exited
		h.srv = startServer(t, h.data, cfg, h.srv.httpAddr, h.srv.sshAddr, "--isolation", "process")
	}
	deployments := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(h.data, "apps", "*", "deployments", "*"))
		return dirs
	}

	// A push whose build hook takes its time.
	before := len(deployments())
	writeFile(t, filepath.Join(repo, ".gantry", "action_hooks", "build"), "#!/bin/sh\nsleep 60\n", 0o755)
	h.alice.runIn(repo, "git", "add", "-A")
	h.alice.runIn(repo, "git", "commit", "-qm", "slow build")
	push := exec.Command("git", "push", "-q")
	push.Dir, push.Env = repo, h.alice.environ()
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	defer push.Process.Kill()
	eventually(t, "the push's deployment directory", 30*time.Second, func() error {
		if n := len(deployments()); n <= before {
			return fmt.Errorf("%d deployment directories", n)
		}
		return nil
	})
	restart()
	push.Process.Kill()
	if n := len(deployments()); n != before {
		t.Errorf("after the restart: %d deployment directories; want %d (the interrupted push's removed)", n, before)
	}
	if code, body := get(t, h.srv.httpClient(), h.srv.url(host, "/")); code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("after the interrupted push: %d %q; want v1", code, body)
	}

	// A scale-up whose gears take 1.5 s to listen.
	h.alice.gantry("env", "set", "web", "START_DELAY_MS=1500")
	scale := exec.Command(gantryBin, "app", "scale", "web", "--gears", "4")
	scale.Env = h.alice.environ()
	if err := scale.Start(); err != nil {
		t.Fatal(err)
	}
	defer scale.Process.Kill()
	eventually(t, "gears starting", 30*time.Second, func() error {
		var a appJSON
		h.alice.gantryJSON(&a, "app", "show", "web")
		for _, g := range a.Gears {
			if g.State == "starting" {
				return nil
			}
		}
		return fmt.Errorf("gears %+v", a.Gears)
	})
	restart()
	scale.Process.Kill()
	eventually(t, "the app back at its one running gear", 60*time.Second, func() error {
		var a appJSON
		h.alice.gantryJSON(&a, "app", "show", "web")
		running := 0
		for _, g := range a.Gears {
			switch g.State {
			case "running":
				running++
			case "draining":
			default:
				return fmt.Errorf("a gear is %s: %+v", g.State, a.Gears)
			}
		}
		if running != 1 {
			return fmt.Errorf("%d running: %+v", running, a.Gears)
		}
		return nil
	})
	c := h.srv.httpClient()
	serve := func(when string) {
		t.Helper()
		for i := 0; i < 40; i++ {
			if code, _ := get(t, c, h.srv.url(host, "/")); code != 200 {
				t.Fatalf("request %d %s: %d", i, when, code)
			}
		}
	}
	serve("after the restart")
	h.alice.gantry("app", "scale", "web", "--gears", "4")
	serve("after scaling to 4")
	h.alice.gantry("app", "restart", "web")
	serve("after a restart of the app")
}

// TestRestartUnderLoad: SIGHUP makes a new server process take over the
// listening sockets; the old one stops accepting only once the new one
// serves, then finishes its open requests and tunnels. Five restarts
// under continuous load fail no request, and a WebSocket open at the
// first one stays open on the old process until its client closes it.
func TestRestartUnderLoad(t *testing.T) {
	t.Run("process", func(t *testing.T) { restartUnderLoad(t, nil) })
	t.Run("namespaces", func(t *testing.T) {
		iso := isolationArgs(t, "namespaces")
		t.Cleanup(func() { cleanupNetwork(iso) })
		restartUnderLoad(t, iso)
	})
}

func restartUnderLoad(t *testing.T, isolation []string) {
	pidFile := filepath.Join(t.TempDir(), "gantry.pid")
	h := newHostile(t, append([]string{"--pid-file", pidFile, "--drain-timeout", "60s"}, isolation...)...)
	deployNodeApp(t, h.alice, "alice", "web")
	h.alice.gantry("app", "scale", "web", "--gears", "2")
	host := "web-alice.localhost"
	readPID := func() int {
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	gone := func(pid int) error {
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
				return fmt.Errorf("process %d still runs", pid)
			}
		}
		return nil
	}
	restart := func(i int) int {
		t.Helper()
		before, servings := readPID(), h.srv.servings.Load()
		time.Sleep(300 * time.Millisecond) // load on the process about to hand over
		if err := syscall.Kill(before, syscall.SIGHUP); err != nil {
			t.Fatalf("restart %d: SIGHUP to %d: %v", i, before, err)
		}
		eventually(t, fmt.Sprintf("restart %d: a new process serving", i), 60*time.Second, func() error {
			if pid := readPID(); pid == before || h.srv.servings.Load() == servings {
				return fmt.Errorf("pid %d", pid)
			}
			return nil
		})
		return before
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+host+":"+h.httpPort+"/ws", &websocket.DialOptions{HTTPClient: h.srv.httpClient()})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	ld := startLoad(h.srv.httpClient(), h.srv.url(host, "/"), 4)
	first := restart(1)
	// The WebSocket is still served by the first process, which waits for it.
	time.Sleep(time.Second)
	if err := ws.Write(ctx, websocket.MessageText, []byte("still there")); err != nil {
		t.Fatalf("websocket after the hand-off: %v", err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "still there" {
		t.Fatalf("websocket echo after the hand-off: %q %v", msg, err)
	}
	if err := gone(first); err == nil {
		t.Fatalf("the first process exited with a WebSocket open")
	}
	ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the first process exits once its WebSocket closed", 20*time.Second, func() error { return gone(first) })
	for i := 2; i <= 5; i++ {
		old := restart(i)
		eventually(t, fmt.Sprintf("restart %d: the old process finishes", i), 30*time.Second, func() error { return gone(old) })
	}
	time.Sleep(300 * time.Millisecond)
	ld.Stop()
	if ld.failed.Load() > 0 || ld.ok.Load() == 0 {
		t.Errorf("%d requests served, %d failed across 5 restarts (first: %v)", ld.ok.Load(), ld.failed.Load(), ld.firstErr.Load())
		t.Log(h.srv.log.String())
	}
	t.Logf("%d requests served across 5 restarts, %d failed", ld.ok.Load(), ld.failed.Load())
	// The last process stops as any would.
	syscall.Kill(readPID(), syscall.SIGTERM)
	select {
	case <-h.srv.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("the last process did not stop on SIGTERM")
	}
}

// TestSecretsAtRest: env values, cartridge passwords and alias private
// keys are not in the clear in the database file; the platform key lives
// apart (0600) and rotates by command, the app still seeing its values.
func TestSecretsAtRest(t *testing.T) {
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	h.alice.gantry("env", "set", "web", "API_KEY=sk-live-TOPSECRET")
	db, err := os.ReadFile(filepath.Join(h.data, "gantry.db"))
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(filepath.Join(h.data, "gantry.db-wal"))
	if strings.Contains(string(db)+string(wal), "TOPSECRET") {
		t.Error("the env value is in the clear in the database file")
	}
	key := filepath.Join(h.data, "secrets.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("platform key %s: %v %v; want a 0600 file", key, fi, err)
	}
	before, _ := os.ReadFile(key)
	out := h.admin.gantry("admin", "secrets", "rotate")
	if after, _ := os.ReadFile(key); string(after) == string(before) || !strings.Contains(out, "sealed again") {
		t.Errorf("rotation: %q; the key file changed: %v", out, string(after) != string(before))
	}
	if out := h.alice.gantryFails("admin", "secrets", "rotate"); !strings.Contains(out, "admin") {
		t.Errorf("a user rotating the key: %q", out)
	}
	if got := mustGet(t, h.srv.httpClient(), h.srv.url("web-alice.localhost", "/env/API_KEY")); got != "sk-live-TOPSECRET" {
		t.Errorf("the app sees API_KEY=%q after the rotation", got)
	}
	h.alice.gantry("app", "restart", "web")
	if got := mustGet(t, h.srv.httpClient(), h.srv.url("web-alice.localhost", "/env/API_KEY")); got != "sk-live-TOPSECRET" {
		t.Errorf("after a restart the app sees API_KEY=%q", got)
	}
}

// TestPushSizeLimit: a push larger than --max-push-size is refused by git
// before anything is stored, with git's own message, and the app runs on.
func TestPushSizeLimit(t *testing.T) {
	h := newHostile(t, "--max-push-size", "1048576")
	_, repo := deployNodeApp(t, h.alice, "alice", "web")
	big := make([]byte, 3<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(repo, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	h.alice.runIn(repo, "git", "add", "big.bin")
	h.alice.runIn(repo, "git", "commit", "-qm", "3 MiB")
	out, err := h.alice.exec(repo, "git", "push")
	if err == nil || !strings.Contains(out, "exceeds maximum allowed size") {
		t.Fatalf("a 3 MiB push with a 1 MiB limit: %v\n%s", err, out)
	}
	if code, body := get(t, h.srv.httpClient(), h.srv.url("web-alice.localhost", "/")); code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("after the refused push: %d %q", code, body)
	}
	// Over git's smart HTTP too.
	var a appJSON
	h.alice.gantryJSON(&a, "app", "show", "web")
	tok := strings.TrimSpace(h.alice.run("sh", "-c", "grep -o '\"token\": *\"[^\"]*\"' "+filepath.Join(h.root, "alice.json")+" | cut -d'\"' -f4"))
	u := strings.Replace(a.GitHTTPURL, "http://", "http://alice:"+tok+"@", 1)
	// (git-http-backend answers 400 without git's message: refused all
	// the same.)
	if out, err = h.alice.exec(repo, "git", "push", u, "main"); err == nil {
		t.Errorf("over HTTP the push was accepted:\n%s", out)
	}
	if code, body := get(t, h.srv.httpClient(), h.srv.url("web-alice.localhost", "/")); code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("after the refused HTTP push: %d %q", code, body)
	}
}

// TestHostileH2RapidReset: HTTP/2 connections that open and reset streams
// as fast as they can (CVE-2023-44487) are cut and their address waits a
// penalty out, so the router's memory stays bounded (it grew by ~120 MiB in
// 10 s before) and other clients are served.
func TestHostileH2RapidReset(t *testing.T) {
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	host := "web-alice.localhost"
	before := processRSS(h.srv.cmd.Process.Pid)
	var wg sync.WaitGroup
	var sent atomic.Int64
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 20; round++ {
				n, _ := h2test.ResetFlood(context.Background(), h.srv.httpsAddr, host, 5000)
				sent.Add(n)
			}
		}()
	}
	wg.Wait()
	grown := processRSS(h.srv.cmd.Process.Pid) - before
	t.Logf("%d streams opened and reset; the server's memory grew by %.1f MiB", sent.Load(), grown)
	if grown > 60 {
		t.Errorf("the server's memory grew by %.1f MiB under the flood; want it bounded (< 60 MiB)", grown)
	}
	if !strings.Contains(h.srv.log.String(), "rapid reset") {
		t.Error("the cut connections were not logged")
	}
	if code, body, err := getFrom("127.0.0.2", h.srv.httpAddr, host, "/"); err != nil || code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("another client after the flood: %d %q %v", code, body, err)
	}
}

// processRSS is a process's resident memory in MiB.
func processRSS(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// TestAliasClaims: on a platform with several users, an alias must be
// under a DNS name its user proved to control (a TXT record with a token
// of theirs) or that an admin granted; a name belongs to one user.
func TestAliasClaims(t *testing.T) {
	dns, err := dnstest.Start(map[string][]string{})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	h := newHostile(t, "--dns-resolver", dns.Addr)
	deployNodeApp(t, h.alice, "alice", "web")
	if out := h.alice.gantryFails("alias", "add", "web", "www.example.test"); !strings.Contains(out, "gantry alias claim example.test") {
		t.Errorf("an alias under no claim: %q; want the command that claims it", out)
	}
	out := h.alice.gantryFails("alias", "claim", "example.test")
	var ch struct {
		Record string `json:"record"`
		Value  string `json:"value"`
	}
	h.alice.gantryJSON(&ch, "alias", "challenge", "example.test")
	if ch.Record != "_gantry-challenge.example.test" || !strings.Contains(out, ch.Value) {
		t.Fatalf("claim without the record: %q; challenge %+v", out, ch)
	}
	// Bob publishes alice's token for his own claim: it proves nothing.
	dns.Set(ch.Record, "txt:"+ch.Value)
	h.bob.gantry("domain", "create", "bob")
	h.bob.gantry("app", "create", "x", "--type", "static")
	if out := h.bob.gantryFails("alias", "claim", "example.test"); !strings.Contains(out, "publish the TXT record") {
		t.Errorf("bob claiming with alice's record: %q", out)
	}
	h.alice.gantry("alias", "claim", "example.test")
	h.alice.gantry("alias", "add", "web", "www.example.test")
	h.alice.gantry("alias", "add", "web", "*.shop.example.test")
	// Now the name is alice's: bob's own record does not take it over.
	var bobCh struct {
		Value string `json:"value"`
	}
	h.bob.gantryJSON(&bobCh, "alias", "challenge", "example.test")
	dns.Set(ch.Record, "txt:"+ch.Value, "txt:"+bobCh.Value)
	if out := h.bob.gantryFails("alias", "claim", "example.test"); !strings.Contains(out, "claimed by another user") {
		t.Errorf("bob claiming alice's name: %q", out)
	}
	if out := h.bob.gantryFails("alias", "claim", "sub.example.test"); !strings.Contains(out, "claimed by another user") && !strings.Contains(out, "publish") {
		t.Errorf("bob claiming a name under alice's: %q", out)
	}
	if out := h.bob.gantryFails("alias", "add", "x", "api.other.test"); !strings.Contains(out, "claim") {
		t.Errorf("bob's alias under no claim: %q", out)
	}
	h.admin.gantry("admin", "alias", "grant", "bob", "other.test")
	h.bob.gantry("alias", "add", "x", "api.other.test")
	var claims []struct {
		Name, Owner, Method string
	}
	h.admin.gantryJSON(&claims, "alias", "claims")
	if len(claims) != 2 {
		t.Errorf("claims as the admin sees them: %+v", claims)
	}
}

// TestDiskLimit: an app's files (data, deployments, caches, logs) live on a
// filesystem of its own sized by its gear size (small: 1 GiB), so a gear
// that writes without end fills its own disk and nobody else's; a larger
// size grows it at once.
func TestDiskLimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("disk limits need root (loop devices; CI runs as root)")
	}
	h := newHostile(t)
	deployNodeApp(t, h.alice, "alice", "web")
	var a struct {
		DiskUsed  int64 `json:"disk_used_bytes"`
		DiskLimit int64 `json:"disk_limit_bytes"`
	}
	h.alice.gantryJSON(&a, "app", "show", "web")
	if a.DiskLimit < 900<<20 || a.DiskLimit > 1<<30 || a.DiskUsed <= 0 {
		t.Fatalf("disk of a small app: %d of %d bytes; want a limit of about 1 GiB", a.DiskUsed, a.DiskLimit)
	}
	out, err := h.alice.exec("", gantryBin, "ssh", "web", "--", "dd", "if=/dev/zero", "of=$GANTRY_DATA_DIR/fill", "bs=1M", "count=1500")
	if err == nil || !strings.Contains(out, "No space left") {
		t.Fatalf("writing 1.5 GiB in a small app: %v\n%s", err, out)
	}
	var host syscall.Statfs_t
	syscall.Statfs(h.data, &host)
	h.alice.gantryJSON(&a, "app", "show", "web")
	if a.DiskUsed < 900<<20 {
		t.Errorf("after the fill, the app uses %d bytes", a.DiskUsed)
	}
	if code, body := get(t, h.srv.httpClient(), h.srv.url("web-alice.localhost", "/")); code != 200 || !strings.HasPrefix(body, "v1") {
		t.Errorf("the app with a full disk: %d %q", code, body)
	}
	h.alice.run(gantryBin, "ssh", "web", "--", "rm", "-f", "$GANTRY_DATA_DIR/fill")
	if out, err := h.alice.exec("", gantryBin, "app", "set", "web", "--gear-size", "medium"); err != nil {
		t.Fatalf("%v %s\n%s", err, out, grepLines(h.srv.log.String(), "resiz"))
	}
	h.alice.gantryJSON(&a, "app", "show", "web")
	// The image is 2 GiB at once; the mounted filesystem grows online
	// where the host permits it (CAP_SYS_RESOURCE), else at its next mount.
	imgs, _ := filepath.Glob(filepath.Join(h.data, "disks", "*.img"))
	if len(imgs) != 1 {
		t.Fatalf("disk images: %v", imgs)
	}
	if fi, _ := os.Stat(imgs[0]); fi.Size() != 2<<30 {
		t.Errorf("after the switch to medium: an image of %d bytes; want 2 GiB", fi.Size())
	}
	if a.DiskLimit < 1900<<20 && !strings.Contains(h.srv.log.String(), "grows at its next mount") {
		t.Errorf("after the switch to medium: a limit of %d bytes, and no word of a later grow", a.DiskLimit)
	}
	h.alice.gantry("app", "delete", "web", "--yes")
	if imgs, _ := filepath.Glob(filepath.Join(h.data, "disks", "*.img")); len(imgs) != 0 {
		t.Errorf("images left after the app was deleted: %v", imgs)
	}
}

// TestLoginOverHTTPS: a user elsewhere logs in over HTTPS, trusting the
// platform root by the fingerprint the operator gives (the certificate
// itself is public); a wrong fingerprint is refused.
func TestLoginOverHTTPS(t *testing.T) {
	h := newHostile(t)
	var ca struct {
		PEM    string `json:"pem"`
		SHA256 string `json:"sha256"`
	}
	h.admin.gantryJSON(&ca, "ca", "show")
	var carol struct {
		Token string `json:"token"`
	}
	h.admin.gantryJSON(&carol, "user", "create", "carol")
	_, port := splitPort(h.srv.httpsAddr)
	server := "https://localhost:" + port
	c := newEnv(t, filepath.Join(h.root, "carol.json"))
	if out := c.gantryFails("login", "--server", server, "--token", carol.Token, "--ca-sha256", strings.Repeat("ab", 32)); !strings.Contains(out, "do not trust it") {
		t.Errorf("login with a wrong fingerprint: %q", out)
	}
	c.gantry("login", "--server", server, "--token", carol.Token, "--ca-sha256", ca.SHA256)
	c.gantry("domain", "create", "carol")
	if out := c.gantry("domain", "list"); !strings.Contains(out, "carol") {
		t.Errorf("over HTTPS: %q", out)
	}
	// With the certificate as a file, as `gantry ca show` prints it.
	pemFile := filepath.Join(h.root, "root.pem")
	writeFile(t, pemFile, ca.PEM, 0o644)
	d := newEnv(t, filepath.Join(h.root, "carol2.json"))
	d.gantry("login", "--server", server, "--token", carol.Token, "--ca", pemFile)
	if out := d.gantry("domain", "list"); !strings.Contains(out, "carol") {
		t.Errorf("over HTTPS with --ca: %q", out)
	}
}
