package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserWSS opens an app's page in headless Chromium over HTTPS, with
// the platform CA trusted the way a user trusts it (its NSS database), and
// the page's WebSocket goes over wss through the router.
func TestBrowserWSS(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "chromium", "certutil")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
	_, httpsPort := splitPort(srv.httpsAddr)
	u := newEnv(t, cfg)
	deployNodeApp(t, u, "acme", "web")

	ctx, cancel := context.WithTimeout(browser(t, u), 60*time.Second)
	defer cancel()
	url := "https://web-acme.localhost:" + httpsPort + "/page"
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#done"))); err != nil {
		t.Fatalf("loading %s in Chromium: %v", url, err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#done")))
	if err != nil {
		t.Fatal(err)
	}
	proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].nextHopProtocol`))
	if err != nil {
		t.Fatal(err)
	}
	if text != "echo: hello from https:" {
		t.Errorf("page says %q; want the wss echo", text)
	}
	if !strings.HasPrefix(proto, "h2") {
		t.Errorf("page loaded over %q; want h2", proto)
	}
	// On h2 the browser opened its WebSocket as a stream of the same
	// connection (RFC 8441: an extended CONNECT), not a connection of its
	// own. Its access line is written when it ends: the page closes it.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`ws.close()`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the WebSocket's access line", 5*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(data, "logs", "access.log"))
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "app=acme/web") && strings.Contains(l, "method=CONNECT") && strings.Contains(l, "proto=HTTP/2.0") && strings.Contains(l, "status=200") {
				return nil
			}
		}
		return fmt.Errorf("no extended CONNECT over h2 in the access log:\n%s", b)
	})
}

// browser starts Debian's headless Chromium with the platform root
// trusted the way a user trusts it (a fresh NSS database), and returns a
// context for chromedp (one minute longer than the test needs, at most).
func browser(t *testing.T, u *env) context.Context {
	t.Helper()
	home := t.TempDir()
	rootPEM := filepath.Join(home, "gantry-root.pem")
	writeFile(t, rootPEM, u.gantry("ca", "show"), 0o644)
	nss := "sql:" + filepath.Join(home, ".pki", "nssdb")
	os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700)
	for _, args := range [][]string{{"-N", "-d", nss, "--empty-password"}, {"-A", "-d", nss, "-n", "gantry", "-t", "C,,", "-i", rootPEM}} {
		if out, err := exec.Command("certutil", args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Env("HOME="+home),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	return ctx
}
