package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/egress/dns/dnstest"
)

// probe connects to each HOST:PORT and says ok, refused or timeout.
const probe = `import socket, sys
for dest in sys.argv[1:]:
    host, port = dest.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), 5)
        s.settimeout(1)
        try:
            greeting = s.recv(64).decode().strip()
        except socket.timeout:
            greeting = "(silent)"
        print(dest, "ok", greeting)
    except ConnectionRefusedError:
        print(dest, "refused")
    except socket.timeout:
        print(dest, "timeout")
    except OSError as e:
        print(dest, "error", e)
`

// outside is a test host in a network namespace of its own, reached from
// the gears through the host (NAT), with listeners on a few ports.
type outside struct {
	ns, hostLink, addr string
	procs              []*exec.Cmd
}

func startOutside(t *testing.T, ports ...int) *outside {
	t.Helper()
	id := strconv.Itoa(os.Getpid() % 10000)
	o := &outside{ns: "gteo" + id, hostLink: "gteh" + id, addr: "198.18.7.2"}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", o.ns).Run()
	exec.Command("ip", "link", "del", o.hostLink).Run()
	t.Cleanup(func() {
		for _, p := range o.procs {
			p.Process.Kill()
			p.Wait()
		}
		exec.Command("ip", "netns", "del", o.ns).Run()
		exec.Command("ip", "link", "del", o.hostLink).Run()
	})
	run("ip", "netns", "add", o.ns)
	run("ip", "link", "add", o.hostLink, "type", "veth", "peer", "name", o.hostLink+"p")
	run("ip", "link", "set", o.hostLink+"p", "netns", o.ns)
	run("ip", "addr", "add", "198.18.7.1/24", "dev", o.hostLink)
	run("ip", "link", "set", o.hostLink, "up")
	run("ip", "netns", "exec", o.ns, "ip", "addr", "add", o.addr+"/24", "dev", o.hostLink+"p")
	run("ip", "netns", "exec", o.ns, "ip", "link", "set", o.hostLink+"p", "up")
	run("ip", "netns", "exec", o.ns, "ip", "link", "set", "lo", "up")
	run("ip", "netns", "exec", o.ns, "ip", "route", "add", "default", "via", "198.18.7.1")
	for _, port := range ports {
		srv := fmt.Sprintf(`import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%s", %d)); s.listen(64)
while True:
    c, _ = s.accept(); c.sendall(b"hello %d\n"); c.close()
`, o.addr, port, port)
		cmd := exec.Command("ip", "netns", "exec", o.ns, "python3", "-c", srv)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		o.procs = append(o.procs, cmd)
	}
	return o
}

// TestEgress: an app's outbound policy enforced from inside real gears,
// against a test host outside, changed while the gears run.
func TestEgress(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "python3", "ip")
	isolation := isolationArgs(t, "namespaces")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	out := startOutside(t, 25, 80, 6667, 7777, 8888)
	// The platform's resolver for this test: names under outside.test are
	// the test host; elsewhere.test is an address nobody listens on.
	names, err := dnstest.Start(map[string][]string{"*.outside.test": {out.addr}, "*.elsewhere.test": {"198.18.7.3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer names.Close()
	names.SetTTL(1) // hostname rules follow changes within the platform's floor (5 s)
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0",
		append(isolation, "--egress-scan-distinct", "10", "--egress-scan-window", "8s", "--egress-scan-block", "--egress-dns-upstream", names.Addr)...)
	u := newEnv(t, cfg)
	_, repo := deployNodeApp(t, u, "acme", "web")
	writeFile(t, filepath.Join(repo, "probe.py"), probe, 0o644)
	u.runIn(repo, "git", "add", "probe.py")
	u.runIn(repo, "git", "commit", "-qm", "probe")
	u.runIn(repo, "git", "push", "-q")
	// The previous deployment's gear drains and stops.
	var a appJSON
	eventually(t, "one gear left after the push", 30*time.Second, func() error {
		u.gantryJSON(&a, "app", "show", "web")
		if len(a.Gears) != 1 || a.Gears[0].State != "running" {
			return fmt.Errorf("gears %+v", a.Gears)
		}
		return nil
	})
	pid := a.Gears[0].PID

	dest := func(port int) string { return fmt.Sprintf("%s:%d", out.addr, port) }
	results := func(dests ...string) map[string]string {
		t.Helper()
		got := map[string]string{}
		text := u.gantry(append([]string{"ssh", "web", "--", "python3", "probe.py"}, dests...)...)
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				got[f[0]] = f[1]
			}
		}
		return got
	}
	expect := func(what string, want map[string]string) {
		t.Helper()
		var dests []string
		for d := range want {
			dests = append(dests, d)
		}
		got := results(dests...)
		for d, w := range want {
			if got[d] != w {
				t.Errorf("%s: %s is %q; want %q (all: %v)", what, d, got[d], w, got)
			}
		}
	}

	expect("default allow", map[string]string{dest(25): "ok", dest(80): "ok", dest(6667): "ok"})

	u.gantry("egress", "deny", "web", "smtp")
	expect("smtp denied", map[string]string{dest(25): "refused", dest(80): "ok", dest(6667): "ok"})

	u.gantry("egress", "allow", "web", "http", out.addr+"/32:6667")
	u.gantry("egress", "deny", "web", "all", "--after", "3")
	expect("allow list with deny all", map[string]string{dest(25): "refused", dest(80): "ok", dest(6667): "ok", dest(7777): "refused"})
	u.gantryJSON(&a, "app", "show", "web")
	if len(a.Gears) != 1 || a.Gears[0].PID != pid {
		t.Errorf("the gear restarted (%+v, was pid %d): policies must apply to running gears", a.Gears, pid)
	}
	// The app's own gears (its databases) stay reachable under deny all:
	// a second gear, and the first one reaching it.
	u.gantry("app", "scale", "web", "--gears", "2")
	u.gantryJSON(&a, "app", "show", "web")
	var peers []string
	for _, g := range a.Gears {
		peers = append(peers, fmt.Sprintf("%s:%d", g.IP, g.Port))
	}
	got := results(peers...)
	for _, p := range peers {
		if got[p] != "ok" {
			t.Errorf("the app's own gear %s under deny all: %q", p, got[p])
		}
	}
	if got := results(dest(7777)); got[dest(7777)] != "refused" {
		t.Errorf("the new gear got the policy too: %v", got)
	}
	// The policy is in force from a new gear's first instruction: the app
	// connects before anything else (the container is made while the
	// policy is applied; the gear's address, which its app waits for,
	// comes after).
	u.gantry("env", "set", "web", "PROBE_AT_START="+dest(7777))
	eventually(t, "the new gears' first connections", 30*time.Second, func() error {
		text := u.gantry("ssh", "web", "--", "sh", "-c", `'cat "$GANTRY_DATA_DIR"/probe-at-start-* 2>/dev/null; echo'`)
		if strings.TrimSpace(text) == "" {
			return fmt.Errorf("no result yet")
		}
		if strings.Contains(text, "ok") || !strings.Contains(text, "ECONNREFUSED") {
			t.Fatalf("a new gear's first connection to a denied port: %q; want ECONNREFUSED", text)
		}
		return nil
	})

	var list struct {
		Rules []struct {
			N          int    `json:"n"`
			Action     string `json:"action"`
			Rule       string `json:"rule"`
			ShadowedBy int    `json:"shadowed_by"`
		} `json:"rules"`
		Enforced bool `json:"enforced"`
	}
	u.gantryJSON(&list, "egress", "list", "web")
	var order []string
	for _, r := range list.Rules {
		order = append(order, r.Action+" "+r.Rule)
	}
	if got, want := strings.Join(order, ", "), "allow http, allow 198.18.7.2/32:6667, deny smtp, deny all"; got != want || !list.Enforced {
		t.Errorf("egress list: %q (enforced %v); want %q", got, list.Enforced, want)
	}
	if out := u.gantry("egress", "test", "web", dest(25)); !strings.Contains(out, "refused (rule 3: deny smtp)") {
		t.Errorf("egress test :25: %q", out)
	}
	if out := u.gantry("egress", "test", "web", dest(80)); !strings.Contains(out, "allowed (rule 1: allow http)") {
		t.Errorf("egress test :80: %q", out)
	}

	// Overlaps are accepted and shown; bad rules change nothing.
	u.gantry("egress", "allow", "web", "7777", "--after", "4")
	u.gantryJSON(&list, "egress", "list", "web")
	if len(list.Rules) != 5 || list.Rules[4].ShadowedBy != 4 {
		t.Errorf("a rule after deny all should show as never applying: %+v", list.Rules)
	}
	for _, c := range []struct{ rule, says string }{
		{"70000", "out of range"},
		{"10.0.0.1/8", "host bits"},
		{"nosuchlabel", "unknown label"},
		{"bad_host.example.com", "not a label"},
	} {
		if msg := u.gantryFails("egress", "allow", "web", "smtp", c.rule); !strings.Contains(msg, c.says) {
			t.Errorf("egress allow %q: %q; want %q", c.rule, msg, c.says)
		}
	}
	u.gantryJSON(&list, "egress", "list", "web")
	if len(list.Rules) != 5 {
		t.Errorf("a refused change altered the policy: %+v", list.Rules)
	}
	u.gantry("egress", "remove", "web", "4") // deny all goes: 7777 is allowed again
	expect("after removing deny all", map[string]string{dest(7777): "ok", dest(25): "refused"})

	// A wildcard hostname rule: names under the domain are let through
	// once the app itself has looked them up (its DNS goes through the
	// platform's forwarder, which learns the answers); other names and
	// addresses stay refused.
	u.gantry("egress", "deny", "web", "all", "--after", "4")
	// A hostname rule follows its name's DNS answer as the TTL runs out.
	names.Set("svc.partner.test", "198.18.7.3")
	u.gantry("egress", "allow", "web", "svc.partner.test")
	expect("a hostname rule for another address", map[string]string{dest(8888): "refused"})
	names.Set("svc.partner.test", out.addr)
	eventually(t, "the hostname rule follows its new DNS answer", 30*time.Second, func() error {
		if got := results(dest(8888)); got[dest(8888)] != "ok" {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	u.gantry("egress", "remove", "web", "1")

	u.gantry("egress", "allow", "web", "*.outside.test")
	expect("a wildcard rule, before any lookup", map[string]string{dest(8888): "refused"})
	expect("a wildcard rule", map[string]string{"api.outside.test:8888": "ok", "deep.api.outside.test:8888": "ok", "x.elsewhere.test:8888": "refused"})
	if names.Queries.Load() == 0 {
		t.Error("the app's lookups did not reach the platform's resolver")
	}
	if out := u.gantry("egress", "test", "web", "api.outside.test:8888"); !strings.Contains(out, "allowed (rule 1: allow *.outside.test)") {
		t.Errorf("egress test api.outside.test:8888: %q", out)
	}
	if out := u.gantry("egress", "test", "web", "x.elsewhere.test:8888"); !strings.Contains(out, "refused (rule 6: deny all)") {
		t.Errorf("egress test x.elsewhere.test:8888: %q", out)
	}
	if msg := u.gantryFails("egress", "allow", "web", "*.com"); !strings.Contains(msg, "wildcard") {
		t.Errorf("egress allow *.com: %q", msg)
	}
	u.gantry("egress", "remove", "web", "1")

	// What the policy refused itself is not also counted as refused by
	// the destination (port-scan detection would count it twice).
	var own struct {
		Refused []struct {
			Dest string `json:"destination"`
		} `json:"refused"`
		Failed []struct {
			Dest string `json:"destination"`
		} `json:"failed"`
	}
	u.gantryJSON(&own, "egress", "list", "web")
	if len(own.Refused) == 0 {
		t.Errorf("egress list shows no refused destination after the policy refused several")
	}
	for _, f := range own.Failed {
		for _, r := range own.Refused {
			if f.Dest == r.Dest {
				t.Errorf("%s, refused by the policy, is also listed as refused by the destination", f.Dest)
			}
		}
	}

	// Port-scan detection: a client retrying one refused destination is
	// not a scan; many distinct refused ports are, and cut the app off.
	var retries []string
	for range 30 {
		retries = append(retries, dest(25))
	}
	results(retries...)
	var scanPorts []string
	for p := 1000; p < 1015; p++ {
		scanPorts = append(scanPorts, dest(p))
	}
	if got := results(scanPorts...); got[dest(1000)] != "refused" {
		t.Fatalf("scan ports: %v", got)
	}
	var events []eventJSON
	eventually(t, "a port_scan event", 30*time.Second, func() error {
		u.gantryJSON(&events, "app", "events", "web")
		for _, e := range events {
			if e.Kind == "port_scan" {
				return nil
			}
		}
		return fmt.Errorf("events %+v", events)
	})
	scans := 0
	for _, e := range events {
		if e.Kind == "port_scan" {
			scans++
			if !strings.Contains(e.Reason, "distinct destinations refused") || !strings.Contains(e.Reason, "gantry admin egress clear") {
				t.Errorf("port_scan reason: %q", e.Reason)
			}
		}
	}
	if scans != 1 {
		t.Errorf("%d port_scan events; want 1", scans)
	}
	var view struct {
		Blocked bool `json:"blocked"`
		Refused []struct {
			Dest    string `json:"destination"`
			Packets int    `json:"packets"`
		} `json:"refused"`
	}
	u.gantryJSON(&view, "egress", "list", "web")
	if !view.Blocked || len(view.Refused) < 15 {
		t.Errorf("after the scan: blocked=%v refused=%d destinations", view.Blocked, len(view.Refused))
	}
	expect("blocked after the scan", map[string]string{dest(80): "refused"})
	if msg := u.gantryFails("admin", "egress", "clear", "acme/nope"); !strings.Contains(msg, "no app") {
		t.Errorf("clearing an unknown app: %q", msg)
	}
	u.gantry("admin", "egress", "clear", "acme/web")
	expect("cleared by the operator", map[string]string{dest(80): "ok"})

	// A scan the policy allows: closed ports of the outside host answer
	// with resets, which are seen too.
	u.gantry("egress", "remove", "web", "5") // deny all
	var closed []string
	for p := 2000; p < 2015; p++ {
		closed = append(closed, dest(p))
	}
	if got := results(closed...); got[dest(2000)] != "refused" {
		t.Fatalf("closed ports: %v", got)
	}
	var failedView struct {
		Refused []struct{} `json:"refused"`
		Failed  []struct {
			Dest string `json:"destination"`
		} `json:"failed"`
	}
	u.gantryJSON(&failedView, "egress", "list", "web")
	if len(failedView.Failed) < 15 {
		t.Errorf("egress list shows %d destinations that refused at the remote end; want 15: %+v", len(failedView.Failed), failedView.Failed)
	}
	eventually(t, "a second port_scan event", 30*time.Second, func() error {
		u.gantryJSON(&events, "app", "events", "web")
		n := 0
		for _, e := range events {
			if e.Kind == "port_scan" {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d port_scan events", n)
		}
		return nil
	})
	expect("blocked after the remote scan", map[string]string{dest(80): "refused"})
	u.gantry("admin", "egress", "clear", "acme/web")
	req, _ := newAuthRequest("GET", "http://"+srv.httpAddr+"/metrics", adminToken(t, cfg))
	resp, err := srv.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io_ReadAll(resp)
	resp.Body.Close()
	for _, want := range []string{`gantry_egress_port_scans_total{app="acme/web"} 2`, `gantry_egress_refused_total{app="acme/web"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
