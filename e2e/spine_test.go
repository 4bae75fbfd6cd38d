package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/node/agent"

	"github.com/coder/websocket"
)

type gearJSON struct {
	ID    string `json:"id"`
	IP    string `json:"ip"`
	Port  int    `json:"port"`
	State string `json:"state"`
	PID   int    `json:"pid"`
	Node  string `json:"node"`
}

type appJSON struct {
	Name       string     `json:"name"`
	Domain     string     `json:"domain"`
	URL        string     `json:"url"`
	GitURL     string     `json:"git_url"`
	GitHTTPURL string     `json:"git_http_url"`
	Type       string     `json:"type"`
	State      string     `json:"state"`
	Gears      []gearJSON `json:"gears"`
}

type deploymentJSON struct {
	ID      string    `json:"id"`
	Commit  string    `json:"commit"`
	Created time.Time `json:"created"`
	Active  bool      `json:"active"`
}

// TestSpine is the user story of the README, end to end, with gears as
// plain processes and, as root, in namespaces.
func TestSpine(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "python3")
	t.Run("process", func(t *testing.T) { spine(t, isolationArgs(t, "process")) })
	t.Run("namespaces", func(t *testing.T) { spine(t, isolationArgs(t, "namespaces")) })
}

func spine(t *testing.T, isolation []string) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", isolation...)
	u := newEnv(t, cfg)
	hc := srv.httpClient()

	// Bootstrap wrote a private client configuration.
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client config: %v, mode %v; want 0600", err, fi.Mode())
	}

	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "acme")
	var app appJSON
	u.gantryJSON(&app, "app", "create", "blog", "--type", "nodejs")
	host := "blog-acme.localhost"
	if app.Name != "blog" || app.Domain != "acme" || app.Type != "nodejs" || !strings.Contains(app.URL, host) ||
		!strings.HasPrefix(app.GitURL, "ssh://") || !strings.Contains(app.GitHTTPURL, "/git/acme/blog.git") {
		t.Fatalf("app create --json: %+v", app)
	}
	if len(app.Gears) != 1 || app.Gears[0].ID == "" || app.Gears[0].IP == "" || app.Gears[0].Port == 0 || app.Gears[0].State != "running" {
		t.Fatalf("app create --json gears: %+v", app.Gears)
	}
	if code, body := get(t, hc, srv.url(host, "/")); code != 200 || !strings.Contains(body, "Welcome to blog") {
		t.Fatalf("starter page: %d %q", code, body)
	}

	// git clone over SSH, edit, push: the build streams back.
	work := t.TempDir()
	repo := filepath.Join(work, "blog")
	u.runIn(work, "git", "clone", app.GitURL, "blog")
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v1"), 0o644)
	for _, h := range []string{"pre_build", "build", "deploy", "post_deploy", "pre_start", "post_start", "pre_stop", "post_stop"} {
		writeFile(t, filepath.Join(repo, ".gantry", "action_hooks", h), hook(h), 0o755)
	}
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v1")
	out := u.runIn(repo, "git", "push")
	for _, want := range []string{"remote: -----> nodejs app detected", "running pre_build", "deployed to " + app.URL} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q:\n%s", want, out)
		}
	}
	if code, body := get(t, hc, srv.url(host, "/")); code != 200 || body != "v1 \n" {
		t.Fatalf("after push: %d %q", code, body)
	}

	t.Run("hooks_run_in_order", func(t *testing.T) {
		got := hookLog(t, data)
		want := "pre_build build deploy pre_start post_start post_deploy"
		if !strings.HasPrefix(got, want) {
			t.Errorf("hooks ran as %q; want prefix %q", got, want)
		}
	})

	t.Run("forwarded_headers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", srv.url(host, "/headers"), nil)
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h map[string]string
		jsonDecode(t, resp.Body, &h)
		if h["x-forwarded-for"] != "127.0.0.1" || h["x-forwarded-proto"] != "http" || !strings.HasPrefix(h["x-forwarded-host"], host) {
			t.Errorf("forwarded headers: %v", h)
		}
	})

	t.Run("websocket_echo", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		wsURL := strings.Replace(srv.url(host, "/"), "http://", "ws://", 1)
		c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		for _, msg := range []string{"hello", "gantry"} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(ctx)
			if err != nil || string(got) != msg {
				t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	})

	// Redeploys, env changes, restarts and rollback under continuous load:
	// no request may fail.
	t.Run("zero_downtime", func(t *testing.T) {
		ld := startLoad(hc, srv.url(host, "/"), 4)
		writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v2"), 0o644)
		u.runIn(repo, "git", "commit", "-qam", "v2")
		u.runIn(repo, "git", "push")
		u.gantry("env", "set", "blog", "GREETING=hello")
		u.gantry("app", "restart", "blog")
		writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v3"), 0o644)
		u.runIn(repo, "git", "commit", "-qam", "v3")
		u.runIn(repo, "git", "push")
		var deps []deploymentJSON
		u.gantryJSON(&deps, "deployment", "list", "blog")
		if len(deps) < 3 || !deps[0].Active || deps[0].ID == "" || len(deps[0].Commit) != 40 || deps[0].Created.IsZero() {
			t.Fatalf("deployment list: %+v", deps)
		}
		u.gantry("deployment", "activate", "blog", deps[1].ID) // back to v2
		time.Sleep(200 * time.Millisecond)
		ld.Stop()
		t.Logf("%d requests served during 2 pushes, env set, restart and rollback; %d failed", ld.ok.Load(), ld.failed.Load())
		if ld.failed.Load() > 0 || ld.ok.Load() < 50 {
			t.Errorf("requests: %d ok, %d failed (first error: %v)", ld.ok.Load(), ld.failed.Load(), ld.firstErr.Load())
		}
		if code, body := get(t, hc, srv.url(host, "/")); code != 200 || body != "v2 hello\n" {
			t.Errorf("after rollback: %d %q; want v2 hello", code, body)
		}
		eventually(t, "old gears drain and stop", 20*time.Second, func() error {
			var shown appJSON
			u.gantryJSON(&shown, "app", "show", "blog")
			if len(shown.Gears) != 1 || shown.Gears[0].State != "running" {
				return fmt.Errorf("gears %+v; want exactly one, running", shown.Gears)
			}
			return nil
		})
	})

	t.Run("gantry_ssh", func(t *testing.T) {
		out := u.gantry("ssh", "blog", "--", "echo", "app=$GANTRY_APP_NAME", "uid=$(id -u)", "pwd=$PWD")
		if !strings.Contains(out, "app=blog") || !strings.Contains(out, "pwd="+data) {
			t.Errorf("gantry ssh output: %q", out)
		}
		var uid, lo, hi int
		if i := strings.Index(out, "uid="); i >= 0 {
			fmt.Sscanf(out[i:], "uid=%d", &uid)
		}
		if namespaced(isolation) {
			lo, hi = agent.UIDRange(isolation[3])
		}
		if namespaced(isolation) && (uid < lo || uid > hi) {
			t.Errorf("namespaced gear shell is not the gear's user: %q", out)
		}
		if _, err := u.exec("", gantryBin, "ssh", "blog", "--", "exit", "7"); exitStatus(err) != 7 {
			t.Errorf("exit status through gantry ssh: %v; want 7", err)
		}
		// Interactive sessions get a terminal.
		sshPort := strings.Split(srv.sshAddr, ":")[1]
		args := append(strings.Fields(u.sshCommand())[1:], "-tt", "-p", sshPort, "git@localhost", "gear acme/blog -- tty; exit")
		out, _ = u.exec("", "ssh", args...)
		if !strings.Contains(out, "/dev/pts/") {
			t.Errorf("gear shell with a pty: %q", out)
		}
	})

	t.Run("port_forward", func(t *testing.T) {
		testPortForward(t, u, "blog", "v2 hello\n")
		testPortForward(t, u, "blog", "v2 hello\n", "--via", "https")
		c := sshClient(t, u, srv.sshAddr)
		var a appJSON
		u.gantryJSON(&a, "app", "show", "blog")
		g := a.Gears[0]
		for _, addr := range []string{srv.sshAddr, "127.0.0.1:22", "10.1.2.3:80", fmt.Sprintf("%s:%d", g.IP, 1)} {
			refusedForward(t, c, addr)
		}
		// Its own gear's web process: allowed.
		conn, err := c.Dial("tcp", fmt.Sprintf("%s:%d", g.IP, g.Port))
		if err != nil {
			t.Errorf("forward to the gear's web process: %v", err)
		} else {
			conn.Close()
		}
	})

	t.Run("env_reserved_names", func(t *testing.T) {
		for _, kv := range []string{"PATH=/x", "GANTRY_APP_NAME=x", "1BAD=x"} {
			out := u.gantryFails("env", "set", "blog", kv)
			if !strings.Contains(out, "Error:") {
				t.Errorf("env set %s: %q", kv, out)
			}
		}
		if code, body := get(t, hc, srv.url(host, "/env/OPENSHIFT_APP_DNS")); code != 200 || body != host {
			t.Errorf("OPENSHIFT_APP_DNS in the gear: %q", body)
		}
	})

	t.Run("bad_pushes_leave_the_app_running", func(t *testing.T) {
		before := mustGet(t, hc, srv.url(host, "/"))
		cases := []struct {
			name  string
			edit  func()
			want  string
			reset bool
		}{
			{"procfile_without_web", func() { writeFile(t, filepath.Join(repo, "Procfile"), "worker: node w.js\n", 0o644) }, "Procfile has no web:", true},
			{"hook_not_executable", func() { writeFile(t, filepath.Join(repo, ".gantry/action_hooks/build"), hook("build"), 0o644) }, "not executable", true},
			{"failing_build_hook", func() {
				writeFile(t, filepath.Join(repo, ".gantry/action_hooks/build"), "#!/bin/sh\necho boom; exit 7\n", 0o755)
			}, "exited with status 7", true},
			{"never_listens", func() {
				writeFile(t, filepath.Join(repo, "server.js"), "setInterval(() => {}, 1000); console.log('not listening')\n", 0o644)
			}, "did not listen on $PORT", true},
			{"crashes_at_start", func() { writeFile(t, filepath.Join(repo, "server.js"), "process.exit(3)\n", 0o644) }, "exited with status 3", true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tc.edit()
				u.runIn(repo, "git", "add", "-A")
				u.runIn(repo, "git", "commit", "-qm", tc.name)
				out, err := u.exec(repo, "git", "push")
				if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "the running app is unchanged") {
					t.Errorf("push: err=%v; want rejection with %q:\n%s", err, tc.want, out)
				}
				u.runIn(repo, "git", "reset", "-q", "--hard", "origin/main")
				if got := mustGet(t, hc, srv.url(host, "/")); got != before {
					t.Errorf("app changed after a rejected push: %q -> %q", before, got)
				}
			})
		}
		t.Run("forced_push", func(t *testing.T) {
			// A forced push is accepted (as Heroku's and Dokku's are), says
			// so, and deploys; the deployments before it stay for rollback.
			u.runIn(repo, "git", "commit", "-q", "--allow-empty", "-m", "side")
			u.runIn(repo, "git", "reset", "-q", "--hard", "HEAD~2")
			u.runIn(repo, "git", "commit", "-q", "--allow-empty", "-m", "diverged")
			var before []deploymentJSON
			u.gantryJSON(&before, "deployment", "list", "blog")
			out, err := u.exec(repo, "git", "push", "--force")
			if err != nil || !strings.Contains(out, "history of main was replaced") {
				t.Errorf("forced push: err=%v\n%s", err, out)
			}
			var after []deploymentJSON
			u.gantryJSON(&after, "deployment", "list", "blog")
			if len(after) < min(len(before)+1, 3) || !after[0].Active {
				t.Errorf("deployments %d before, %d after the forced push (newest active: %v)", len(before), len(after), len(after) > 0 && after[0].Active)
			}
			u.runIn(repo, "git", "fetch", "-q")
			u.runIn(repo, "git", "reset", "-q", "--hard", "origin/main")
		})
		t.Run("delete_branch", func(t *testing.T) {
			out, err := u.exec(repo, "git", "push", "origin", ":main")
			if err == nil || !strings.Contains(out, "not allowed") {
				t.Errorf("deleting main: err=%v\n%s", err, out)
			}
		})
	})

	t.Run("python_over_http_git", func(t *testing.T) {
		var py appJSON
		u.gantryJSON(&py, "app", "create", "api", "--type", "python")
		tok := adminToken(t, cfg)
		authURL := strings.Replace(py.GitHTTPURL, "http://", "http://u:"+url.QueryEscape(tok)+"@", 1)
		_, port := splitPort(srv.httpAddr)
		authURL = strings.Replace(authURL, "localhost:"+port, "127.0.0.1:"+port, 1)
		pyRepo := filepath.Join(work, "api")
		u.runIn(work, "git", "clone", "-q", authURL, "api")
		writeFile(t, filepath.Join(pyRepo, "app.py"), pythonApp, 0o644)
		u.runIn(pyRepo, "git", "commit", "-qam", "py")
		out := u.runIn(pyRepo, "git", "push")
		if !strings.Contains(out, "python app detected") {
			t.Errorf("push over HTTP:\n%s", out)
		}
		if code, body := get(t, hc, srv.url("api-acme.localhost", "/")); code != 200 || body != "python says api-acme.localhost\n" {
			t.Errorf("python app: %d %q", code, body)
		}
		// Wrong token: refused.
		bad := strings.Replace(authURL, url.QueryEscape(tok), "nope", 1)
		if out, err := u.exec(work, "git", "ls-remote", bad); err == nil {
			t.Errorf("ls-remote with a bad token worked:\n%s", out)
		}
	})

	t.Run("stop_start_and_pages", func(t *testing.T) {
		u.gantry("app", "stop", "blog")
		code, body := get(t, hc, srv.url(host, "/"))
		if code != 503 || !strings.Contains(body, "gantry app start") {
			t.Errorf("stopped app: %d %q", code, body)
		}
		u.gantry("app", "start", "blog")
		if code, _ := get(t, hc, srv.url(host, "/")); code != 200 {
			t.Errorf("started app: %d", code)
		}
		if code, body := get(t, hc, srv.url("nothing-acme.localhost", "/")); code != 404 || !strings.Contains(body, "No app") {
			t.Errorf("unknown host: %d %q", code, body)
		}
	})

	t.Run("logs", func(t *testing.T) {
		out := u.gantry("logs", "blog", "--lines", "200")
		if !strings.Contains(out, "listening on") {
			t.Errorf("logs lack the app's output:\n%s", out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := execCommandContext(ctx, gantryBin, "logs", "blog", "-f", "--lines", "0")
		cmd.Env = u.environ()
		var buf syncBuffer
		cmd.Stdout = &buf
		cmd.Start()
		time.Sleep(300 * time.Millisecond)
		u.gantry("app", "restart", "blog") // new gear prints "listening on"
		eventually(t, "logs -f shows the new gear", 15*time.Second, func() error {
			if !strings.Contains(buf.String(), "listening on") {
				return fmt.Errorf("got %q", buf.String())
			}
			return nil
		})
		cancel()
		cmd.Wait()
	})

	t.Run("two_users", func(t *testing.T) {
		var bob struct {
			Name  string `json:"name"`
			Token string `json:"token"`
		}
		u.gantryJSON(&bob, "user", "create", "bob")
		if bob.Token == "" {
			t.Fatal("no token for bob")
		}
		b := newEnv(t, filepath.Join(root, "bob.json"))
		b.gantry("login", "--server", "http://"+srv.httpAddr, "--token", bob.Token)
		b.gantry("sshkey", "add", filepath.Join(b.home, ".ssh", "id_ed25519.pub"))
		var apps []appJSON
		b.gantryJSON(&apps, "app", "list")
		if len(apps) != 0 {
			t.Errorf("bob sees apps: %+v", apps)
		}
		if out := b.gantryFails("app", "show", "acme/blog"); !strings.Contains(out, "no app") {
			t.Errorf("bob app show: %q", out)
		}
		if out := b.gantryFails("env", "set", "acme/blog", "X=1"); !strings.Contains(out, "no app") {
			t.Errorf("bob env set: %q", out)
		}
		var adminApp appJSON
		u.gantryJSON(&adminApp, "app", "show", "blog")
		bc := sshClient(t, b, srv.sshAddr)
		for _, g := range adminApp.Gears {
			refusedForward(t, bc, fmt.Sprintf("%s:%d", g.IP, g.Port))
		}
		if out, err := b.exec("", gantryBin, "ssh", "acme/blog", "--", "id"); err == nil || !strings.Contains(out, "no app") {
			t.Errorf("bob got a shell in admin's gear: %v %q", err, out)
		}
		if out := b.gantryFails("app", "delete", "acme/blog", "--yes"); !strings.Contains(out, "no app") {
			t.Errorf("bob delete: %q", out)
		}
		if out := b.gantryFails("domain", "create", "acme"); !strings.Contains(out, "taken") {
			t.Errorf("bob takes acme: %q", out)
		}
		if out := b.gantryFails("user", "list"); !strings.Contains(out, "admin") {
			t.Errorf("bob lists users: %q", out)
		}
		out, err := b.exec(t.TempDir(), "git", "clone", app.GitURL, "x")
		if err == nil || !strings.Contains(out, "you have no app") {
			t.Errorf("bob cloned admin's app over SSH: err=%v\n%s", err, out)
		}
		bobHTTP := strings.Replace(app.GitHTTPURL, "http://", "http://b:"+url.QueryEscape(bob.Token)+"@", 1)
		if out, err := b.exec(t.TempDir(), "git", "ls-remote", bobHTTP); err == nil {
			t.Errorf("bob read admin's repo over HTTP:\n%s", out)
		}
		// Bob's own app works, under his own domain.
		b.gantry("domain", "create", "bobs")
		b.gantry("app", "create", "site", "--type", "static")
		if code, body := get(t, hc, srv.url("site-bobs.localhost", "/")); code != 200 || !strings.Contains(body, "Welcome to site") {
			t.Errorf("bob's static app: %d %q", code, body)
		}
	})

	t.Run("crashed_gear_restarts", func(t *testing.T) {
		before := gearPID(t, u, "blog")
		mustGet(t, hc, srv.url(host, "/crash"))
		eventually(t, "the gear comes back with a new process", 20*time.Second, func() error {
			resp, err := hc.Get(srv.url(host, "/"))
			if err != nil {
				return err
			}
			io_ReadAll(resp)
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			if p := gearPID(t, u, "blog"); p == before || p == 0 {
				return fmt.Errorf("gear process %d; want a new one", p)
			}
			return nil
		})
		out := u.gantry("app", "show", "blog")
		if !strings.Contains(out, "1 restarts, last:") || !strings.Contains(out, "killed by signal killed") {
			t.Errorf("app show does not say why the gear restarted:\n%s", out)
		}
	})

	// The server stops and starts again; the gears are not restarted and
	// serve again as soon as the server is back.
	t.Run("server_restart_keeps_gears", func(t *testing.T) {
		pid := mustGet(t, hc, srv.url(host, "/pid"))
		hostPID := gearPID(t, u, "blog")
		srv.stop()
		if err := syscall.Kill(hostPID, 0); err != nil {
			t.Fatalf("gear process %d died with the server: %v", hostPID, err)
		}
		srv2 := startServer(t, data, cfg, srv.httpAddr, srv.sshAddr, isolation...)
		if !strings.Contains(srv2.log.String(), "running=3") {
			t.Errorf("server did not re-attach to 3 gears:\n%s", srv2.log.String())
		}
		if got := mustGet(t, hc, srv2.url(host, "/pid")); got != pid {
			t.Errorf("gear pid after server restart: %s; want %s (not restarted)", got, pid)
		}
		if got := gearPID(t, u, "blog"); got != hostPID {
			t.Errorf("gear process after server restart: %d; want %d (not restarted)", got, hostPID)
		}
		// And it still deploys.
		writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v4"), 0o644)
		u.runIn(repo, "git", "commit", "-qam", "v4")
		u.runIn(repo, "git", "push")
		if got := mustGet(t, hc, srv2.url(host, "/")); got != "v4 hello\n" {
			t.Errorf("after restart and push: %q", got)
		}
		u.gantry("app", "delete", "blog", "--yes")
		if code, _ := get(t, hc, srv2.url(host, "/")); code != 404 {
			t.Errorf("deleted app: %d; want 404", code)
		}
		if out, err := u.exec(repo, "git", "push"); err == nil {
			t.Errorf("push to a deleted app worked:\n%s", out)
		}
		if out := u.gantryFails("app", "delete", "api"); !strings.Contains(out, "--yes") {
			t.Errorf("delete without a terminal or --yes: %q", out)
		}
	})
}
