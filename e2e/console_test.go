package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleApp logs the requests it is asked to (/say/WORD) and holds
// WebSockets open; VERSION tells deployments apart.
const consoleApp = `const http = require("http");
const crypto = require("crypto");
const server = http.createServer((req, res) => {
  if (req.url.startsWith("/say/")) console.log("said " + req.url.slice(5));
  res.end("VERSION\n");
});
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  socket.on("error", () => {});
});
server.listen(process.env.PORT, process.env.IP);
`

// TestConsole drives the web console in Debian's Chromium over HTTPS with
// the platform root trusted: sign in; the apps list shows an app pushed
// with git; scale it from the console (the console and `gantry app show`
// see the gears); roll back; a line the app prints shows in the live log
// view; the live connections rise while 40 WebSockets are open; another
// user sees none of it; a change without the CSRF token is refused;
// signing out ends the session. Screenshots of the main pages are saved
// in $GANTRY_ARTIFACTS (default: a temporary directory, named in the log).
func TestConsole(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "chromium", "certutil")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
	_, httpsPort := splitPort(srv.httpsAddr)
	u := newEnv(t, cfg)
	_, repo := deployNodeApp(t, u, "acme", "web")
	push := func(version string) {
		t.Helper()
		writeFile(t, filepath.Join(repo, "server.js"), strings.Replace(consoleApp, "VERSION", version, 1), 0o644)
		u.runIn(repo, "git", "commit", "-qam", version)
		u.runIn(repo, "git", "push", "-q")
	}
	push("one")
	push("two")
	hc := srv.httpClient()
	if got := mustGet(t, hc, srv.url("web-acme.localhost", "/")); got != "two\n" {
		t.Fatalf("the app serves %q", got)
	}
	setPassword := func(e *env, pw string) {
		t.Helper()
		if out, err := e.execIn("", pw+"\n", e.cli(), "user", "password", "--password-stdin"); err != nil {
			t.Fatalf("gantry user password: %v\n%s", err, out)
		}
	}
	setPassword(u, "correct horse battery")
	if out := u.gantryFails("user", "password", "--password-stdin"); !strings.Contains(out, "characters") {
		t.Errorf("an empty password: %s", out)
	}

	shots := os.Getenv("GANTRY_ARTIFACTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "gantry-console-screenshots")
	}
	os.MkdirAll(shots, 0o755)
	t.Logf("console screenshots in %s", shots)
	ctx, cancel := context.WithTimeout(browser(t, u), 4*time.Minute)
	defer cancel()
	base := "https://localhost:" + httpsPort + "/console/"
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	// fetchStatus runs fetch in the page and returns the status.
	fetchStatus := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js+`.then(r => String(r.status))`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
	}
	// flash waits for the page a form led to, with its message.
	flash := func(want string) {
		t.Helper()
		eventually(t, "the message "+want, 60*time.Second, func() error {
			msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(".flash") || {textContent: ""}).textContent`))
			if !strings.Contains(msg, want) {
				return fmt.Errorf("the page says %q", msg)
			}
			return nil
		})
	}
	signIn := func(user, pw string) {
		t.Helper()
		do("signing in as "+user,
			chromedp.Navigate(base),
			chromedp.WaitVisible(chromedp.CSS("#password")),
			chromedp.SendKeys(chromedp.CSS("#user"), user),
			chromedp.SendKeys(chromedp.CSS("#password"), pw),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#apps")))
	}

	// A wrong password is refused with a message; the right one signs in.
	do("the sign-in page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#password")))
	shot("signin")
	do("a wrong password",
		chromedp.SendKeys(chromedp.CSS("#user"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), "wrong password"),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(".flash.err")))
	if msg := text(".flash.err"); !strings.Contains(msg, "wrong user name or password") {
		t.Errorf("a wrong password says %q", msg)
	}
	signIn("admin", "correct horse battery")
	if got := text(`tr[data-app="acme/web"] td a`); got != "web" {
		t.Errorf("the apps list shows %q", got)
	}
	if cookie := eval(`document.cookie`); cookie != "" {
		t.Errorf("the session cookie is readable by scripts: %q", cookie)
	}
	shot("apps")

	// Scale from the console: the gears show there and in the CLI.
	do("the app page", chromedp.Navigate(base+"apps/acme/web"), chromedp.WaitVisible(chromedp.CSS("#scale-form")))
	do("scaling to 2",
		chromedp.SetValue(chromedp.CSS("#scale-gears"), "2"),
		chromedp.Click(chromedp.CSS("#scale-submit")))
	flash("Scaling changed")
	eventually(t, "two gears in the console", 30*time.Second, func() error {
		if n := eval(`document.querySelector("[data-live]").dataset.gears || ""`); n != "2" {
			return fmt.Errorf("the console shows %q gears", n)
		}
		return nil
	})
	var shown struct {
		Scale int `json:"scale"`
	}
	u.gantryJSON(&shown, "app", "show", "web")
	if shown.Scale != 2 {
		t.Errorf("gantry app show: scale %d after scaling in the console", shown.Scale)
	}
	shot("app")

	// An alias added in the console is the app's.
	do("adding an alias", chromedp.Navigate(base+"apps/acme/web"),
		chromedp.SendKeys(chromedp.CSS("#alias-host"), "www.console.test"),
		chromedp.Click(chromedp.CSS("#alias-add")))
	flash("is an alias of web")
	if out := u.gantry("alias", "list", "web"); !strings.Contains(out, "www.console.test") {
		t.Errorf("the alias added in the console:\n%s", out)
	}
	if got := text("#gear-table tbody tr td:nth-child(7)"); got == "" {
		t.Error("the gears table shows no memory column")
	}

	// A phone-size screen.
	do("a phone-size screen", chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#scale-form")))
	shot("app-phone")
	do("a desktop screen", chromedp.EmulateViewport(1280, 900), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#scale-form")))

	// Roll back to the deployment before.
	t.Logf("deployments in the console:\n%s", text("#deployments"))
	do("rolling back", chromedp.Navigate(base+"apps/acme/web"), chromedp.Click(chromedp.CSS("#deployments button.rollback")))
	flash("is live")
	if got := mustGet(t, hc, srv.url("web-acme.localhost", "/")); got != "one\n" {
		t.Errorf("after the rollback the app serves %q; want one", got)
	}

	// A line the app prints shows in the live log view.
	do("the logs page", chromedp.Navigate(base+"apps/acme/web/logs"), chromedp.WaitReady(chromedp.CSS("#log")))
	time.Sleep(500 * time.Millisecond) // the stream opens
	said := time.Now()
	mustGet(t, hc, srv.url("web-acme.localhost", "/say/console-hello"))
	eventually(t, "the line in the live log view", 20*time.Second, func() error {
		if !strings.Contains(eval(`document.getElementById("log").textContent`), "said console-hello") {
			return fmt.Errorf("not shown yet")
		}
		return nil
	})
	t.Logf("a line the app printed showed in the console's log view %s after the request", time.Since(said).Round(10*time.Millisecond))
	shot("logs")

	// A terminal in a gear runs id and shows the gear's uid.
	wantUID := strings.TrimSpace(u.gantry("ssh", "web", "--", "id", "-u"))
	do("the terminal page", chromedp.Navigate(base+"apps/acme/web/terminal"), chromedp.WaitVisible(chromedp.CSS(`#term[data-state="open"]`)))
	eval(`gantryTerminal.input("id\r"), "typed"`)
	eventually(t, "id in the terminal", 20*time.Second, func() error {
		screen := eval(`(() => { const b = gantryTerminal.buffer.active; let s = ""; for (let i = 0; i < b.length; i++) s += b.getLine(i).translateToString(true) + "\n"; return s; })()`)
		if !strings.Contains(screen, "uid="+wantUID+"(") && !strings.Contains(screen, "uid="+wantUID+" ") {
			return fmt.Errorf("the terminal shows:\n%s", screen)
		}
		return nil
	})
	shot("terminal")
	if got := fetchStatus(`fetch("/console/apps/acme/web/terminal/ws")`); got != "403" {
		t.Errorf("a terminal request without a WebSocket Origin: %s", got)
	}

	// 40 WebSockets held open: the live connections rise.
	do("the app page", chromedp.Navigate(base+"apps/acme/web"), chromedp.WaitVisible(chromedp.CSS("#chart-conns")))
	for i := 0; i < 40; i++ {
		c, err := net.Dial("tcp", srv.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web-acme.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("WebSocket %d: %v %v", i, resp, err)
		}
	}
	eventually(t, "40 connections in the console", 30*time.Second, func() error {
		n, _ := strconv.Atoi(eval(`document.querySelector("[data-live]").dataset.connections || "0"`))
		if n < 40 {
			return fmt.Errorf("the console shows %d connections", n)
		}
		return nil
	})
	// The charts' history, from the server's own metrics: the requests
	// made above and the 40 connections are in it.
	eventually(t, "the traffic in the charts' history", 30*time.Second, func() error {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch("/console/apps/acme/web/stats.json").then(r => r.json()).then(s => JSON.stringify({rps: Math.max(0, ...s.samples.map(x => x.rps)), conns: Math.max(0, ...s.samples.map(x => x.connections)), p99: Math.max(0, ...s.samples.map(x => x.p99_ms))}))`, chromedp.EvalAwaitPromise))
		if err != nil {
			return err
		}
		var st struct{ RPS, Conns, P99 float64 }
		json.Unmarshal([]byte(got), &st)
		if st.RPS <= 0 || st.Conns < 40 || st.P99 <= 0 {
			return fmt.Errorf("history %s", got)
		}
		return nil
	})
	shot("app-connections")

	// A change without the CSRF token is refused.
	status := fetchStatus(`fetch("/console/apps/acme/web/scale", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "mode=fixed&gears=3", redirect: "manual"})`)
	if status != "403" {
		t.Errorf("a change without the CSRF token: status %s; want 403", status)
	}
	u.gantryJSON(&shown, "app", "show", "web")
	if shown.Scale != 2 {
		t.Errorf("the refused change scaled the app to %d", shown.Scale)
	}

	// An API token made in the console works, and is revoked there.
	do("making a token", chromedp.Navigate(base+"tokens"),
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "from-console"),
		chromedp.Click(chromedp.CSS("#make-token")),
		chromedp.WaitVisible(chromedp.CSS("#new-token")))
	tok := text("#new-token")
	req, _ := http.NewRequest("GET", "http://"+srv.httpAddr+"/v1/info", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the token made in the console: %v %v", resp, err)
	}
	do("revoking it", chromedp.Click(chromedp.CSS(`tr[data-name="from-console"] button`)))
	flash("Token revoked")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("the revoked token: %v %v", resp, err)
	}

	// A value shown on request is text, not markup.
	u.gantry("env", "set", "web", "MARKUP=<i id=injected>hi</i>")
	do("revealing an env value", chromedp.Navigate(base+"apps/acme/web"),
		chromedp.Click(chromedp.CSS(`#env span.secret`)),
		chromedp.WaitVisible(chromedp.CSS(`#env span.secret code`)))
	if got := text(`#env span.secret code`); got != "<i id=injected>hi</i>" {
		t.Errorf("the revealed value reads %q", got)
	}
	if n := eval(`String(document.querySelectorAll("#injected").length)`); n != "0" {
		t.Error("a revealed value became markup in the page")
	}

	// The admin page: machines, users, the platform's totals.
	do("the admin page", chromedp.Navigate(base+"admin"), chromedp.WaitVisible(chromedp.CSS("#platform")))
	if p := text("#platform"); !strings.Contains(p, "1 of 1 machine(s) up") {
		t.Errorf("the admin page says %q", p)
	}
	if !strings.Contains(text("#users"), "admin") {
		t.Error("the admin page lists no users")
	}
	shot("admin")

	// Signing out ends the session: the cookie's token no longer works.
	do("signing out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#password")))
	do("the apps list after signing out", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#password")))
	var tokens []struct {
		Session bool `json:"session"`
	}
	u.gantryJSON(&tokens, "token", "list")
	for _, tk := range tokens {
		if tk.Session {
			t.Errorf("a session is left after signing out: %+v", tokens)
		}
	}

	// Another user sees none of it.
	var bob struct {
		Token string `json:"token"`
	}
	u.gantryJSON(&bob, "user", "create", "bob")
	b := newEnv(t, filepath.Join(root, "bob.json"))
	b.gantry("login", "--server", "http://"+srv.httpAddr, "--token", bob.Token)
	setPassword(b, "bob's long passphrase")
	signIn("bob", "bob's long passphrase")
	if strings.Contains(text("#apps"), "web") {
		t.Errorf("bob's apps list shows the admin's app:\n%s", text("#apps"))
	}
	do("the admin's app page as bob", chromedp.Navigate(base+"apps/acme/web"), chromedp.WaitVisible(chromedp.CSS(".flash.err")))
	if msg := text(".flash.err"); !strings.Contains(msg, "no app") {
		t.Errorf("bob on the admin's app page: %q", msg)
	}
	if got := fetchStatus(`fetch("/console/apps/acme/web/env/PATH")`); got != "404" {
		t.Errorf("bob reading the admin's env: %s", got)
	}
	if got := fetchStatus(`fetch("/console/admin")`); got != "403" {
		t.Errorf("bob on the admin page: %s", got)
	}
}
