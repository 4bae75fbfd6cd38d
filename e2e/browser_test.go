package e2e

import (
	"context"
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
