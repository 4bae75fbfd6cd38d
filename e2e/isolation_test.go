package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

type probeResult struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	MS     int    `json:"ms"`
	Status int    `json:"status"`
	Out    string `json:"out"`
}

// TestIsolation checks, with two real apps in namespaced gears, what a
// gear cannot do: reach another app's gear, see its processes, read its
// files, bind its address, change its own network rules, exceed its memory
// or process limit, gain privileges; and that deleting an app leaves
// nothing behind.
func TestIsolation(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	iso := isolationArgs(t, "namespaces")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(iso) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", iso...)
	u := newEnv(t, cfg)
	hc := srv.httpClient()
	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "iso")

	deploy := func(name string, extra ...string) appJSON {
		var a appJSON
		u.gantryJSON(&a, append([]string{"app", "create", name, "--type", "nodejs"}, extra...)...)
		work := t.TempDir()
		u.runIn(work, "git", "clone", "-q", a.GitURL, name)
		repo := filepath.Join(work, name)
		writeFile(t, filepath.Join(repo, "server.js"), probeApp, 0o644)
		u.runIn(repo, "git", "commit", "-qam", "probe")
		u.runIn(repo, "git", "push", "-q")
		eventually(t, name+"'s old gears drain", 20*time.Second, func() error {
			u.gantryJSON(&a, "app", "show", name)
			for _, g := range a.Gears {
				if g.State != "running" {
					return fmt.Errorf("gear %+v", g)
				}
			}
			return nil
		})
		return a
	}
	alpha := deploy("alpha", "--scale", "2")
	beta := deploy("beta")
	if len(alpha.Gears) != 2 || len(beta.Gears) != 1 {
		t.Fatalf("gears: alpha %+v, beta %+v", alpha.Gears, beta.Gears)
	}
	for _, g := range append(alpha.Gears, beta.Gears...) {
		if !strings.HasPrefix(g.IP, "10.232.") || g.Port != 8080 {
			t.Fatalf("gear %+v is not on its own namespace address", g)
		}
	}
	probe := func(app, path string, q url.Values) probeResult {
		t.Helper()
		body := mustGet(t, hc, srv.url(app+"-iso.localhost", path+"?"+q.Encode()))
		var r probeResult
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%s%s: %q", app, path, body)
		}
		return r
	}
	betaAddr := beta.Gears[0].IP + ":8080"

	t.Run("cannot_connect_to_another_apps_gear", func(t *testing.T) {
		r := probe("alpha", "/connect", url.Values{"addr": {betaAddr}})
		if r.OK {
			t.Errorf("alpha reached beta's gear at %s", betaAddr)
		}
		// Its own app's other gear is reachable (add-on services use this).
		other := alpha.Gears[1].IP + ":8080"
		if r := probe("alpha", "/connect", url.Values{"addr": {other}}); !r.OK {
			t.Errorf("alpha cannot reach its own other gear %s: %s", other, r.Error)
		}
	})

	t.Run("cannot_see_other_processes", func(t *testing.T) {
		body := mustGet(t, hc, srv.url("alpha-iso.localhost", "/ps"))
		var procs []string
		json.Unmarshal([]byte(body), &procs)
		if len(procs) > 4 {
			t.Errorf("alpha sees %d processes: %q", len(procs), procs)
		}
		for _, p := range procs {
			if strings.Contains(p, "gantry server") || strings.Contains(p, "shim") {
				t.Errorf("alpha sees a host process %q", p)
			}
		}
	})

	t.Run("cannot_read_another_gears_files", func(t *testing.T) {
		betaData := appDir(t, data, "beta")
		betaID := filepath.Base(betaData)
		// Inside, the data directory holds only the mount points of the
		// gear's own app.
		for _, p := range []string{filepath.Join(data, "apps"), data} {
			if r := probe("alpha", "/read", url.Values{"path": {p}}); strings.Contains(r.Out, betaID) || strings.Contains(r.Out, "gantry.db") || strings.Contains(r.Out, "ssh_host") {
				t.Errorf("alpha sees %q in %s", r.Out, p)
			}
		}
		if r := probe("alpha", "/read", url.Values{"path": {"/root"}}); r.OK {
			t.Errorf("alpha can list /root: %s", r.Out)
		}
		if r := probe("alpha", "/read", url.Values{"path": {filepath.Join(betaData, "data")}}); r.OK {
			t.Errorf("alpha can list beta's data directory")
		}
		// On the host, beta's data belongs to beta's user only.
		fi, err := os.Stat(filepath.Join(betaData, "data"))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("beta's data dir: %v %v; want mode 0700", fi.Mode(), err)
		}
	})

	t.Run("cannot_bind_another_gears_ip", func(t *testing.T) {
		if r := probe("alpha", "/bind", url.Values{"ip": {beta.Gears[0].IP}}); r.OK || r.Error != "EADDRNOTAVAIL" {
			t.Errorf("binding beta's IP: %+v; want EADDRNOTAVAIL", r)
		}
		if r := probe("alpha", "/bind", url.Values{"ip": {"0.0.0.0"}}); !r.OK {
			t.Errorf("binding 0.0.0.0 in its own namespace: %+v", r)
		}
	})

	t.Run("client_socket_bound_to_own_ip_connects", func(t *testing.T) {
		// The router picks either alpha gear: bind to the answering gear's
		// own address (the other's is not local and must fail), and connect
		// to the other gear.
		a, b := alpha.Gears[0].IP, alpha.Gears[1].IP
		// The router alternates between the gears: ask the same thing
		// several times in a row so that each gear gets the question.
		okA, okB := false, false
		for i := 0; i < 3; i++ {
			okA = okA || probe("alpha", "/connect", url.Values{"addr": {b + ":8080"}, "from": {a}}).OK
		}
		for i := 0; i < 3; i++ {
			okB = okB || probe("alpha", "/connect", url.Values{"addr": {a + ":8080"}, "from": {b}}).OK
		}
		if !okA && !okB {
			r1 := probe("alpha", "/connect", url.Values{"addr": {b + ":8080"}, "from": {a}})
			r2 := probe("alpha", "/connect", url.Values{"addr": {a + ":8080"}, "from": {b}})
			t.Errorf("no alpha gear could connect from its own IP to its sibling: %+v %+v", r1, r2)
		}
	})

	t.Run("cannot_change_its_network_rules", func(t *testing.T) {
		for _, cmd := range []string{"ip link set lo down", "ip addr add 10.232.9.9/32 dev eth0", "nft flush ruleset", "ip route del default"} {
			if r := probe("alpha", "/exec", url.Values{"cmd": {cmd}}); r.Status == 0 {
				t.Errorf("%q succeeded in a gear: %s", cmd, r.Out)
			}
		}
		if r := probe("alpha", "/connect", url.Values{"addr": {alpha.Gears[0].IP + ":8080"}}); !r.OK {
			t.Errorf("the gear's network broke: %+v", r)
		}
	})

	t.Run("cannot_gain_privileges", func(t *testing.T) {
		r := probe("alpha", "/exec", url.Values{"cmd": {"grep -E '^(Uid|CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status"}})
		for _, want := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(r.Out, want) {
				t.Errorf("status lacks %q:\n%s", want, r.Out)
			}
		}
		if strings.Contains(r.Out, "Uid:\t0\t") {
			t.Errorf("gear runs as root:\n%s", r.Out)
		}
		for _, cmd := range []string{"mount -t tmpfs none /tmp", "unshare -r id", "chroot / true", "su -c id root </dev/null"} {
			if r := probe("alpha", "/exec", url.Values{"cmd": {cmd}}); r.Status == 0 {
				t.Errorf("%q succeeded in a gear: %s", cmd, r.Out)
			}
		}
	})

	t.Run("process_limit", func(t *testing.T) {
		var res struct{ OK, Failed int }
		body := mustGet(t, hc, srv.url("beta-iso.localhost", "/fork?n=400"))
		json.Unmarshal([]byte(body), &res)
		t.Logf("beta started %d processes, %d refused", res.OK, res.Failed)
		if res.OK >= 250 || res.Failed == 0 {
			t.Errorf("beta started %d processes (%d failed); want the 250 limit to stop it", res.OK, res.Failed)
		}
	})

	t.Run("memory_limit_kills_and_restarts", func(t *testing.T) {
		hc.Get(srv.url("beta-iso.localhost", "/alloc?mb=700"))
		eventually(t, "beta's gear is restarted after running out of memory", 30*time.Second, func() error {
			out := u.gantry("app", "show", "beta")
			if !strings.Contains(out, "out of memory") {
				return fmt.Errorf("app show:\n%s", out)
			}
			if code, _ := get(t, hc, srv.url("beta-iso.localhost", "/")); code != 200 {
				return fmt.Errorf("beta answers %d", code)
			}
			return nil
		})
		// A larger size applies live.
		u.gantry("app", "set", "beta", "--gear-size", "medium")
		var b appJSON
		u.gantryJSON(&b, "app", "show", "beta")
		limit, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", iso[3], b.Gears[0].ID, "memory.limit_in_bytes"))
		if v2 := filepath.Join("/sys/fs/cgroup", iso[3], b.Gears[0].ID, "memory.max"); len(limit) == 0 {
			limit, _ = os.ReadFile(v2)
		}
		if strings.TrimSpace(string(limit)) != fmt.Sprint(1<<30) {
			t.Errorf("memory limit after resize: %q; want 1 GiB", limit)
		}
	})

	t.Run("delete_leaves_nothing", func(t *testing.T) {
		var b appJSON
		u.gantryJSON(&b, "app", "show", "beta")
		dir := appDir(t, data, "beta")
		u.gantry("app", "delete", "beta", "--yes")
		prefix := iso[3]
		for _, g := range b.Gears {
			if _, err := os.Stat(netplan.NetnsPath(prefix + "-" + g.ID)); err == nil {
				t.Errorf("namespace of gear %s left", g.ID)
			}
			for _, c := range []string{"memory", "pids", "cpu"} {
				if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "gantry", g.ID)); err == nil {
					t.Errorf("%s cgroup of gear %s left", c, g.ID)
				}
			}
			rules, _ := exec.Command("nft", "list", "ruleset").Output()
			if strings.Contains(string(rules), g.IP+",") || strings.Contains(string(rules), g.IP+" }") {
				t.Errorf("nftables still names %s", g.IP)
			}
		}
		links, _ := exec.Command("ip", "-o", "link").Output()
		if n := strings.Count(string(links), "master "+prefix+"0"); n != 2 {
			t.Errorf("%d veths on the bridge; want alpha's 2", n)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("beta's files are left in %s", dir)
		}
		if out, _ := exec.Command("runc", "--root", filepath.Join(data, "run", "runc"), "list", "-q").Output(); strings.Count(string(out), "\n") != 2 {
			t.Errorf("runc containers after delete: %q; want alpha's 2", out)
		}
	})
}

// appDir finds an app's directory by its name in the logs of the server's
// data directory layout.
func appDir(t *testing.T, data, name string) string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(data, "apps", "*"))
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "repo.git", "description")); err == nil && strings.Contains(string(b), name) {
			return d
		}
		// The starter's package.json names the app.
		out, _ := exec.Command("git", "--git-dir", filepath.Join(d, "repo.git"), "show", "HEAD~1:package.json").Output()
		if strings.Contains(string(out), `"name": "`+name+`"`) {
			return d
		}
	}
	t.Fatalf("no app directory for %s", name)
	return ""
}
