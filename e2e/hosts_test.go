package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/egressdns"
)

// The hosts our users have (issue: Ubuntu, Docker beside Gantry...),
// simulated on this machine.

// TestDNSStubHost: a host whose resolv.conf names only a loopback stub
// (127.0.0.53, as systemd-resolved leaves Ubuntu). The server runs in a
// mount namespace where /etc/resolv.conf is such a file, and a stub
// forwards from 127.0.0.53 to the real resolvers. Namespaced gears cannot
// reach a loopback stub; they resolve through the platform's forwarder,
// so a gear resolves a name and a build runs npm install.
func TestDNSStubHost(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "unshare")
	iso := isolationArgs(t, "namespaces")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(iso) })

	// The stub: the platform's own forwarder code on 127.0.0.53:53, with
	// the machine's real resolvers behind it.
	real, _ := os.ReadFile("/etc/resolv.conf")
	ups := egressdns.Upstreams(string(real))
	if len(ups) == 0 {
		t.Fatal("this machine's /etc/resolv.conf names no resolver")
	}
	stub := egressdns.New(egressdns.Options{Addr: mustAddrPort("127.0.0.53:53"), Upstreams: ups})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := stub.Start(ctx); err != nil {
		t.Skipf("cannot run a stub resolver on 127.0.0.53:53 here: %v", err)
	}
	stubConf := filepath.Join(root, "stub-resolv.conf")
	writeFile(t, stubConf, "# as systemd-resolved leaves it\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", 0o644)
	// The server sees the stub file as /etc/resolv.conf (and so would its
	// gears, through their read-only /etc, without the fix).
	wrapper := []string{"unshare", "-m", "--propagation", "private", "sh", "-c", "mount --bind " + stubConf + " /etc/resolv.conf && exec \"$@\"", "sh"}
	cfg := filepath.Join(root, "admin.json")
	srv := startServerVia(t, wrapper, data, cfg, "127.0.0.1:0", "127.0.0.1:0", iso...)
	u := newEnv(t, cfg)
	_, repo := deployNodeApp(t, u, "acme", "web")

	out := u.gantry("ssh", "web", "--", "getent", "hosts", "registry.npmjs.org")
	if !strings.Contains(out, "registry.npmjs.org") {
		t.Fatalf("a gear resolving registry.npmjs.org on a stub-resolver host: %q", out)
	}
	// A build that needs DNS: npm install of a dependency.
	writeFile(t, filepath.Join(repo, "package.json"), `{"name":"web","version":"1.0.0","main":"server.js","dependencies":{"is-number":"7.0.0"}}`, 0o644)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "a dependency")
	if out, err := u.exec(repo, "git", "push"); err != nil || !strings.Contains(out, "npm install") {
		t.Fatalf("a push that runs npm install on a stub-resolver host: %v\n%s", err, out)
	}
	if out := u.gantry("ssh", "web", "--", "ls", "node_modules"); !strings.Contains(out, "is-number") {
		t.Errorf("node_modules after the build: %q", out)
	}
	_ = srv
}
