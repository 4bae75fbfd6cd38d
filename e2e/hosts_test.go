package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/egress/dns"
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
	ups := dns.Upstreams(string(real))
	if len(ups) == 0 {
		t.Fatal("this machine's /etc/resolv.conf names no resolver")
	}
	stub := dns.New(dns.Options{Addr: mustAddrPort("127.0.0.53:53"), Upstreams: ups})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := stub.Start(ctx); err != nil {
		// Taken: this host has a stub there already (systemd-resolved),
		// the very trait simulated here; it serves as the stub.
		if _, lerr := dns.Lookup(ctx, []string{"127.0.0.53:53"}, "registry.npmjs.org"); lerr != nil {
			t.Fatalf("127.0.0.53:53 is taken (%v) by something that does not answer DNS (%v): free it for this test", err, lerr)
		}
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

// TestDoctor: `gantry admin doctor` reports every check on this machine,
// and with a host trait broken (FORWARD at DROP, nothing accepting the
// gear bridge) it names it and the fix.
func TestDoctor(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen")
	type check struct{ Name, Status, Detail, Fix string }
	doctor := func(u *env) ([]check, string, error) {
		out, err := u.exec("", gantryBin, "admin", "doctor", "--json")
		var cs []check
		if i := strings.Index(out, "["); i >= 0 {
			json.Unmarshal([]byte(out[i:strings.LastIndex(out, "]")+1]), &cs)
		}
		return cs, out, err
	}
	t.Run("namespaces", func(t *testing.T) {
		iso := isolationArgs(t, "namespaces")
		root := t.TempDir()
		data := filepath.Join(root, "data")
		t.Cleanup(func() { killGears(data); cleanupNetwork(iso) })
		cfg := filepath.Join(root, "admin.json")
		srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", iso...)
		if !strings.Contains(srv.log.String(), "host: isolation=full") || !strings.Contains(srv.log.String(), "cgroups=") {
			t.Errorf("no host summary at start:\n%s", srv.log.String())
		}
		u := newEnv(t, cfg)
		cs, out, err := doctor(u)
		if err != nil {
			t.Fatalf("doctor on this machine: %v\n%s", err, out)
		}
		t.Logf("doctor:\n%s", u.run(gantryBin, "admin", "doctor"))
		seen := map[string]string{}
		for _, c := range cs {
			seen[c.Name] = c.Status
			if c.Status == "error" {
				t.Errorf("%s: %s (%s)", c.Name, c.Detail, c.Fix)
			}
		}
		for _, name := range []string{"isolation", "kernel", "cgroups", "runc", "nft", "ip-forward", "bridge-netfilter", "forward-policy", "firewalls", "dns", "port-http", "port-https", "port-ssh", "disk"} {
			if seen[name] == "" {
				t.Errorf("doctor does not report %s: %s", name, out)
			}
		}
		if seen["dns"] != "ok" {
			t.Errorf("dns from gears: %q\n%s", seen["dns"], out)
		}
	})
	t.Run("forward_drop", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("changes the host's iptables (CI runs as root)")
		}
		ipt, err := exec.LookPath("iptables")
		if err != nil {
			t.Fatal("iptables is not installed: run scripts/install-deps")
		}
		// The host's filter table, put back at the end whatever it held.
		saved, err := exec.Command(ipt+"-save", "-t", "filter").Output()
		if err != nil {
			t.Fatalf("iptables-save: %v", err)
		}
		t.Cleanup(func() {
			cmd := exec.Command(ipt+"-restore", "-T", "filter")
			cmd.Stdin = strings.NewReader(string(saved))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("putting the host's iptables filter table back: %v: %s", err, out)
			}
		})
		root := t.TempDir()
		data := filepath.Join(root, "data")
		t.Cleanup(func() { killGears(data) })
		cfg := filepath.Join(root, "admin.json")
		startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
		u := newEnv(t, cfg)
		if out, err := exec.Command(ipt, "-P", "FORWARD", "DROP").CombinedOutput(); err != nil {
			t.Fatalf("iptables -P FORWARD DROP: %v %s", err, out)
		}
		cs, out, err := doctor(u)
		if err == nil {
			t.Errorf("doctor succeeded with FORWARD at DROP:\n%s", out)
		}
		found := false
		for _, c := range cs {
			if c.Name == "forward-policy" {
				found = c.Status == "error" && strings.Contains(c.Fix, "1 -i gantry0 -j ACCEPT") // in FORWARD, or DOCKER-USER on a Docker host
			}
		}
		if !found {
			t.Errorf("doctor does not name the FORWARD drop and its fix:\n%s", out)
		}
	})
}

// TestGoAppNamespaced: a Go app builds and serves in a namespaced gear
// with Go installed as usual in /usr/local/go (gear-init looked for its
// command in /usr/local/bin, /usr/bin and /bin only, not in the gear's
// PATH: "go could not be run in the gear (exit 127)").
func TestGoAppNamespaced(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "go")
	iso := isolationArgs(t, "namespaces")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(iso) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", iso...)
	u := newEnv(t, cfg)
	u.gantry("domain", "create", "acme")
	if out := u.gantry("app", "create", "hello", "--type", "go"); strings.Contains(out, "did not deploy") {
		t.Fatalf("a Go app in a namespaced gear:\n%s", out)
	}
	if code, body := get(t, srv.httpClient(), srv.url("hello-acme.localhost", "/")); code != 200 || body == "" {
		t.Errorf("the Go app: %d %q", code, body)
	}
}
