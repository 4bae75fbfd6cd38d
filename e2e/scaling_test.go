package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

type scaledApp struct {
	appJSON
	Idle        bool `json:"idle"`
	MinGears    int  `json:"min_gears"`
	MaxGears    int  `json:"max_gears"`
	Connections int  `json:"connections"`
}

type eventJSON struct {
	Kind   string `json:"kind"`
	From   int    `json:"from"`
	To     int    `json:"to"`
	Reason string `json:"reason"`
}

// TestScaling: manual and automatic scaling on live connections, idling to
// zero and waking on the next request, with no request lost.
func TestScaling(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process", "--scale-down-after", "3s", "--wake-timeout", "5s")
	u := newEnv(t, cfg)
	hc := srv.httpClient()
	host := "web-sc.localhost"
	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "sc")
	var a appJSON
	u.gantryJSON(&a, "app", "create", "web", "--type", "nodejs", "--scalable")
	work := t.TempDir()
	u.runIn(work, "git", "clone", "-q", a.GitURL, "web")
	repo := filepath.Join(work, "web")
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v1"), 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v1")
	u.runIn(repo, "git", "push", "-q")

	show := func() scaledApp {
		var s scaledApp
		u.gantryJSON(&s, "app", "show", "web")
		return s
	}
	running := func(s scaledApp) int {
		n := 0
		for _, g := range s.Gears {
			if g.State == "running" {
				n++
			}
		}
		return n
	}
	waitGears := func(what string, ok func(int) bool, d time.Duration) {
		t.Helper()
		eventually(t, what, d, func() error {
			s := show()
			if !ok(running(s)) {
				return fmt.Errorf("%d running gears: %+v", running(s), s.Gears)
			}
			return nil
		})
	}
	if s := show(); s.MinGears != 1 || s.MaxGears != 3 {
		t.Fatalf("--scalable: min %d max %d; want 1 and 3", s.MinGears, s.MaxGears)
	}

	t.Run("manual", func(t *testing.T) {
		u.gantry("app", "scale", "web", "--gears", "3")
		if n := running(show()); n != 3 {
			t.Errorf("after --gears 3: %d gears", n)
		}
		u.gantry("app", "scale", "web", "--gears", "1")
		waitGears("back to 1 gear", func(n int) bool { return n == 1 }, 20*time.Second)
	})

	t.Run("bad_input", func(t *testing.T) {
		for _, args := range [][]string{
			{"--min", "3", "--max", "2"}, {"--min", "-1", "--max", "2"}, {"--max", "100", "--min", "1"},
			{"--min", "1", "--max", "2", "--target-connections", "0"}, {"--gears", "2", "--max", "3"},
		} {
			out := u.gantryFails(append([]string{"app", "scale", "web"}, args...)...)
			if !strings.Contains(out, "Error:") {
				t.Errorf("scale %v: %q", args, out)
			}
		}
		if out := u.gantryFails("app", "idle", "web", "--after", "soon"); !strings.Contains(out, "duration") {
			t.Errorf("idle --after soon: %q", out)
		}
	})

	t.Run("automatic_up_and_down", func(t *testing.T) {
		u.gantry("app", "scale", "web", "--min", "1", "--max", "4", "--target-connections", "2")
		ld := startLoad(hc, srv.url(host, "/slow"), 8)
		waitGears("load adds gears", func(n int) bool { return n >= 3 }, 30*time.Second)
		ld.Stop()
		if ld.failed.Load() > 0 {
			t.Errorf("%d of %d requests failed while scaling up (first: %v)", ld.failed.Load(), ld.ok.Load()+ld.failed.Load(), ld.firstErr.Load())
		}
		waitGears("gears go back to min when the load stops", func(n int) bool { return n == 1 }, 60*time.Second)
		var evs []eventJSON
		u.gantryJSON(&evs, "app", "events", "web")
		kinds := ""
		for _, e := range evs {
			kinds += e.Kind + " "
			if e.Reason == "" {
				t.Errorf("event without a reason: %+v", e)
			}
		}
		if !strings.Contains(kinds, "scale_up") || !strings.Contains(kinds, "scale_down") {
			t.Errorf("events: %q", kinds)
		}
	})

	t.Run("websocket_survives_scale_down", func(t *testing.T) {
		u.gantry("app", "scale", "web", "--gears", "2")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		wsURL := strings.Replace(srv.url(host, "/"), "http://", "ws://", 1)
		var conns []*websocket.Conn
		for i := 0; i < 2; i++ { // one lands on each gear
			c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			conns = append(conns, c)
		}
		u.gantry("app", "scale", "web", "--gears", "1")
		time.Sleep(500 * time.Millisecond)
		for i, c := range conns {
			if err := c.Write(ctx, websocket.MessageText, []byte("still")); err != nil {
				t.Fatalf("websocket %d after scale-down: %v", i, err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "still" {
				t.Errorf("websocket %d after scale-down: %q %v", i, msg, err)
			}
			c.Close(websocket.StatusNormalClosure, "")
		}
		waitGears("the drained gear stops once its websocket closed", func(n int) bool { return n == 1 }, 20*time.Second)
		eventually(t, "only one gear left", 20*time.Second, func() error {
			if n := len(show().Gears); n != 1 {
				return fmt.Errorf("%d gears", n)
			}
			return nil
		})
	})

	t.Run("idle_and_wake", func(t *testing.T) {
		u.gantry("app", "idle", "web", "--now")
		if s := show(); !s.Idle || s.State != "idle" {
			t.Fatalf("after idle --now: %+v", s)
		}
		// The last gear drains in the background (it has no connections).
		eventually(t, "the idled app's gear stops", 20*time.Second, func() error {
			if s := show(); len(s.Gears) != 0 {
				return fmt.Errorf("gears %+v", s.Gears)
			}
			return nil
		})
		if code, body := get(t, hc, srv.url(host, "/")); code != 200 || body != "v1 \n" {
			t.Fatalf("first request to an idle app: %d %q", code, body)
		}
		if s := show(); s.Idle || running(s) != 1 {
			t.Errorf("after wake: idle=%v gears=%d", s.Idle, running(s))
		}

		u.gantry("app", "idle", "web", "--now")
		var ok, failed atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := hc.Get(srv.url(host, "/"))
				if err == nil {
					b, _ := io_ReadAll(resp)
					if resp.StatusCode == 200 && string(b) == "v1 \n" {
						ok.Add(1)
						return
					}
				}
				failed.Add(1)
			}()
		}
		wg.Wait()
		if ok.Load() != 50 {
			t.Errorf("50 concurrent requests to an idle app: %d ok, %d failed", ok.Load(), failed.Load())
		}
		var evs []eventJSON
		u.gantryJSON(&evs, "app", "events", "web")
		wakes := 0
		for _, e := range evs {
			if e.Kind == "wake" {
				wakes++
			}
		}
		if wakes != 2 {
			t.Errorf("%d wake events; want 2 (one per idle, however many requests): %+v", wakes, evs)
		}
		// Counted in metrics too.
		req, _ := http.NewRequest("GET", "http://"+srv.httpAddr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken(t, cfg))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io_ReadAll(resp)
		if !strings.Contains(string(m), `gantry_scale_events_total{app="sc/web",kind="wake"} 2`) || !strings.Contains(string(m), `gantry_app_connections{app="sc/web"}`) {
			t.Errorf("metrics lack the wake count or connections:\n%s", grepLines(string(m), "gantry_"))
		}
	})

	t.Run("failed_wake_is_a_clear_503", func(t *testing.T) {
		// The new environment makes the app crash at start: the restart
		// fails and the running gear stays; once idle, it cannot wake.
		u.gantryFails("env", "set", "web", "CRASH=1")
		u.gantry("app", "idle", "web", "--now")
		start := time.Now()
		code, body := get(t, hc, srv.url(host, "/"))
		if code != 503 || !strings.Contains(body, "did not start within 5s") {
			t.Errorf("request to an app that cannot wake: %d %q", code, body)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("the 503 took %s; want about the 5s wake timeout", d)
		}
		var evs []eventJSON
		u.gantryJSON(&evs, "app", "events", "web")
		if last := evs[len(evs)-1]; last.Kind != "wake_failed" || !strings.Contains(last.Reason, "exited with status 1") {
			t.Errorf("last event: %+v; want wake_failed with the reason", last)
		}
		u.gantry("env", "unset", "web", "CRASH") // restarts it, awake
		if code, _ := get(t, hc, srv.url(host, "/")); code != 200 {
			t.Errorf("after fixing the environment: %d", code)
		}
	})

	t.Run("idles_after_inactivity", func(t *testing.T) {
		u.gantry("app", "idle", "web", "--after", "2s")
		eventually(t, "the app idles without traffic", 20*time.Second, func() error {
			if s := show(); !s.Idle {
				return fmt.Errorf("not idle: %+v", s.Gears)
			}
			return nil
		})
		u.gantry("app", "idle", "web", "--after", "off")
	})

	t.Run("push_to_idle_app_deploys_and_wakes", func(t *testing.T) {
		if !show().Idle {
			u.gantry("app", "idle", "web", "--now")
		}
		writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v2"), 0o644)
		u.runIn(repo, "git", "commit", "-qam", "v2")
		u.runIn(repo, "git", "push", "-q")
		s := show()
		if s.Idle || running(s) < 1 {
			t.Errorf("after a push to an idle app: idle=%v gears=%+v", s.Idle, s.Gears)
		}
		if got := mustGet(t, hc, srv.url(host, "/")); got != "v2 \n" {
			t.Errorf("after push: %q", got)
		}
	})
}

// standbyApp records each start of its app (by gear) in its data
// directory, and answers with its gear's ID.
const standbyApp = `const fs = require("fs");
fs.appendFileSync(process.env.GANTRY_DATA_DIR + "/starts", process.env.GANTRY_GEAR_ID + "\n");
require("http").createServer((req, res) => res.end(process.env.GANTRY_GEAR_ID + " " + (process.env.V || "v1"))).listen(process.env.PORT, process.env.IP);
`

// TestWakeFromStandby: a namespaced app that idles leaves a standby gear
// (its container made, its outbound policy in place, its app not started:
// gear-init waits for the address). The next request wakes that gear
// rather than making one; a server killed with SIGKILL while the app is
// idle finds its standby again and wakes it; a change of the app's
// variables, a deploy and a deletion take the standby with them. An
// autoscaled app keeps one for its next scale-up.
func TestWakeFromStandby(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	srv, u := namespacedUser(t, "--wake-timeout", "10s")
	iso := isolationArgs(t, "auto")
	var a appJSON
	u.gantryJSON(&a, "app", "create", "web", "--type", "nodejs")
	work := t.TempDir()
	u.runIn(work, "git", "clone", "-q", a.GitURL, "web")
	repo := filepath.Join(work, "web")
	writeFile(t, filepath.Join(repo, "server.js"), standbyApp, 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v1")
	u.runIn(repo, "git", "push", "-q")
	host := "web-acme.localhost"
	starts := func() []string {
		files, _ := filepath.Glob(filepath.Join(srv.data, "apps", "*", "data", "starts"))
		if len(files) != 1 {
			t.Fatalf("starts files: %v", files)
		}
		b, _ := os.ReadFile(files[0])
		return strings.Fields(string(b))
	}
	gears := func(state string) []gearJSON {
		var s appJSON
		u.gantryJSON(&s, "app", "show", "web")
		var out []gearJSON
		for _, g := range s.Gears {
			if g.State == state {
				out = append(out, g)
			}
		}
		return out
	}
	idle := func() gearJSON {
		t.Helper()
		u.gantry("app", "idle", "web", "--now")
		eventually(t, "the idle app's gear stopped", 20*time.Second, func() error {
			if g := gears("running"); len(g) != 0 {
				return fmt.Errorf("running: %+v", g)
			}
			return nil
		})
		sb := gears("standby")
		if len(sb) != 1 {
			t.Fatalf("standby gears after idle: %+v; want one", sb)
		}
		return sb[0]
	}
	wakeOn := func(want gearJSON, what string) {
		t.Helper()
		code, body := get(t, srv.httpClient(), srv.url(host, "/"))
		if code != 200 || !strings.HasPrefix(body, want.ID+" ") {
			t.Fatalf("%s: %d %q; want the standby gear %s to answer", what, code, body, want.ID)
		}
		if r := gears("running"); len(r) != 1 || r[0].ID != want.ID {
			t.Errorf("%s: running %+v; want the standby gear %s", what, r, want.ID)
		}
		if s := gears("standby"); len(s) != 0 {
			t.Errorf("%s: standby gears left %+v", what, s)
		}
		if s := starts(); s[len(s)-1] != want.ID {
			t.Errorf("%s: app starts %v; want the last by %s", what, s, want.ID)
		}
	}

	sb := idle()
	before := len(starts())
	time.Sleep(500 * time.Millisecond) // its app would have started by now
	if n := len(starts()); n != before {
		t.Fatalf("the standby gear's app started before any request: %v", starts())
	}
	wakeOn(sb, "the first wake")

	// A server killed while the app is idle: the standby is there again
	// (its address not given by the start's full reconcile) and wakes.
	sb = idle()
	srv.cmd.Process.Kill()
	<-srv.exited
	srv = startServer(t, srv.data, srv.cfg, srv.httpAddr, srv.sshAddr, append(iso, "--wake-timeout", "10s")...)
	time.Sleep(500 * time.Millisecond)
	if s := starts(); s[len(s)-1] == sb.ID {
		t.Fatalf("the standby's app started with the server: %v", s)
	}
	wakeOn(sb, "a wake after the server was killed")

	// Variables changed while idle: the app wakes with them, not from a
	// standby made before.
	sb = idle()
	u.gantry("env", "set", "web", "V=v2")
	if code, body := get(t, srv.httpClient(), srv.url(host, "/")); code != 200 || !strings.HasSuffix(body, " v2") || strings.HasPrefix(body, sb.ID) {
		t.Errorf("after env set: %d %q; want v2 from a new gear", code, body)
	}
	if s := gears("standby"); len(s) != 0 {
		t.Errorf("standby gears after env set: %+v", s)
	}

	// A deploy to an idle app: its standby goes.
	sb = idle()
	writeFile(t, filepath.Join(repo, "server.js"), standbyApp+"// v3\n", 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v3")
	u.runIn(repo, "git", "push", "-q")
	if s := gears("standby"); len(s) != 0 {
		t.Errorf("standby gears after a deploy: %+v", s)
	}
	if code, body := get(t, srv.httpClient(), srv.url(host, "/")); code != 200 || strings.HasPrefix(body, sb.ID) {
		t.Errorf("after a deploy: %d %q; want a new gear", code, body)
	}

	// An autoscaled app keeps a standby for its next scale-up, which
	// takes it.
	u.gantry("app", "scale", "web", "--min", "1", "--max", "3")
	if s := gears("standby"); len(s) != 1 {
		t.Fatalf("standby gears of an autoscaled app: %+v; want one", s)
	} else {
		sb = s[0]
	}
	u.gantry("app", "scale", "web", "--gears", "2")
	if r := gears("running"); len(r) != 2 || r[0].ID != sb.ID && r[1].ID != sb.ID {
		t.Errorf("after a scale-up: running %+v; want the standby %s among them", r, sb.ID)
	}
	if s := gears("standby"); len(s) != 0 {
		t.Errorf("standby gears of an app no longer autoscaled: %+v", s)
	}

	// Deleted while idle: nothing of the standby is left.
	sb = idle()
	u.gantry("app", "delete", "web", "--yes")
	if _, err := os.Stat(netplan.NetnsPath(iso[3] + "-" + sb.ID)); err == nil {
		t.Errorf("the standby gear's namespace outlived its app")
	}
	if out, _ := exec.Command("runc", "--root", filepath.Join(srv.data, "run", "runc"), "list", "-q").Output(); strings.Contains(string(out), sb.ID) {
		t.Errorf("the standby gear's container outlived its app: %s", out)
	}
}
