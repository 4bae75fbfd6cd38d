package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// routerProbe runs from inside a gear: direct HOST:PORT, http URL (through
// HTTP_PROXY, as any HTTP client does), connect HOST:PORT (a raw CONNECT
// through the proxy) and env NAME; one line per step.
const routerProbe = `import os, socket, sys, urllib.request, urllib.error
args = sys.argv[1:]
while args:
    op, arg, args = args[0], args[1], args[2:]
    try:
        if op == "env":
            print(op, arg, os.environ.get(arg, "-"))
        elif op == "direct":
            host, port = arg.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), 5)
            s.settimeout(2)
            print(op, arg, "ok", s.recv(64).decode().strip().replace(" ", "_"))
        elif op == "http":
            try:
                r = urllib.request.urlopen(arg, timeout=10)
                print(op, arg, r.status, r.read().decode().strip().replace(" ", "_"))
            except urllib.error.HTTPError as e:
                print(op, arg, e.code, e.read().decode().strip().replace(" ", "_")[:200])
        elif op == "connect":
            proxy = os.environ["HTTP_PROXY"].split("//")[1].rstrip("/")
            host, port = proxy.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), 5)
            s.settimeout(5)
            s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (arg, arg)).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(1)
                if not chunk:
                    break
                head += chunk
            status = head.split(b" ")[1].decode() if head else "closed"
            rest = ""
            if status == "200":
                rest = s.recv(64).decode().strip().replace(" ", "_")
            print(op, arg, status, rest)
    except ConnectionRefusedError:
        print(op, arg, "refused")
    except socket.timeout:
        print(op, arg, "timeout")
    except OSError as e:
        print(op, arg, "error", str(e).replace(" ", "_"))
`

// TestEgressRouter: an app bound to the egress router reaches a test host
// outside only through it, in each mode, from inside its real gears.
func TestEgressRouter(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "python3", "ip")
	isolation := isolationArgs(t, "namespaces")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	out := startOutside(t, 6667, 7777)
	// A web server outside, on 8080.
	web := exec.Command("ip", "netns", "exec", out.ns, "python3", "-m", "http.server", "--bind", out.addr, "8080", "--directory", root)
	if err := web.Start(); err != nil {
		t.Fatal(err)
	}
	out.procs = append(out.procs, web)
	writeFile(t, filepath.Join(root, "index.txt"), "outside web", 0o644)
	eventually(t, "the outside web server", 20*time.Second, func() error {
		c, err := net.DialTimeout("tcp", out.addr+":8080", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})

	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", isolation...)
	u := newEnv(t, cfg)
	_, repo := deployNodeApp(t, u, "acme", "web")
	writeFile(t, filepath.Join(repo, "probe.py"), routerProbe, 0o644)
	u.runIn(repo, "git", "add", "probe.py")
	u.runIn(repo, "git", "commit", "-qm", "probe")
	u.runIn(repo, "git", "push", "-q")

	dest := func(port int) string { return fmt.Sprintf("%s:%d", out.addr, port) }
	probe := func(steps ...string) map[string]string {
		t.Helper()
		got := map[string]string{}
		text := u.gantry(append([]string{"ssh", "web", "--", "python3", "probe.py"}, steps...)...)
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 {
				got[f[0]+" "+f[1]] = strings.Join(f[2:], " ")
			}
		}
		return got
	}
	webURL := "http://" + dest(8080) + "/index.txt"
	if got := probe("direct", dest(6667)); got["direct "+dest(6667)] != "ok hello_6667" {
		t.Fatalf("before the router, directly: %v", got)
	}

	// HTTP proxy mode: the app restarts with HTTP_PROXY and is bound.
	u.gantry("egress", "proxy", "web", "198.18.7.0/24", "!"+dest(7777))
	got := probe("env", "HTTP_PROXY", "env", "GANTRY_EGRESS_ROUTER", "http", webURL, "connect", dest(6667), "connect", dest(7777), "direct", dest(6667), "direct", dest(8080))
	router := got["env GANTRY_EGRESS_ROUTER"]
	for k, want := range map[string]string{
		"env HTTP_PROXY":        "http://" + router + ":3128",
		"http " + webURL:        "200 outside_web",
		"connect " + dest(6667): "200 hello_6667",
		"connect " + dest(7777): "403",
		"direct " + dest(6667):  "refused", // bound: only through the router
		"direct " + dest(8080):  "refused",
	} {
		if got[k] != want {
			t.Errorf("proxy mode: %s = %q, want %q (all: %v)", k, got[k], want, got)
		}
	}
	if router == "-" || router == "" {
		t.Fatalf("no GANTRY_EGRESS_ROUTER in the gear: %v", got)
	}
	// A request the ACL does not cover is refused with the reason.
	u.gantry("egress", "proxy", "web", "!198.18.7.0/24:8080", "198.18.7.0/24")
	if got := probe("http", webURL); !strings.HasPrefix(got["http "+webURL], "403 gantry_egress_router:") || !strings.Contains(got["http "+webURL], "ACL_entry_1") {
		t.Errorf("http denied by the ACL: %v", got)
	}
	if msg := u.gantry("egress", "test", "web", dest(6667)); !strings.Contains(msg, "HTTP proxy") {
		t.Errorf("egress test of a bound app: %q", msg)
	}

	// Redirect mode: connections to any address on 25 reach the fixed target.
	u.gantry("egress", "redirect", "web", "*:25", dest(6667))
	u.gantry("egress", "redirect", "web", "203.0.113.0/24:2525", dest(7777))
	got = probe("direct", "192.0.2.25:25", "direct", "203.0.113.7:2525", "direct", "203.0.113.7:2526")
	for k, want := range map[string]string{
		"direct 192.0.2.25:25":    "ok hello_6667",
		"direct 203.0.113.7:2525": "ok hello_7777",
		"direct 203.0.113.7:2526": "refused",
	} {
		if got[k] != want {
			t.Errorf("redirect mode: %s = %q, want %q (all: %v)", k, got[k], want, got)
		}
	}

	// TCP proxy mode: round-robin over both targets, then failover when
	// one stops answering.
	u.gantry("egress", "tcp", "web", "15000", dest(6667), dest(7777))
	var steps []string
	for range 4 {
		steps = append(steps, "direct", router+":15000")
	}
	text := u.gantry(append([]string{"ssh", "web", "--", "python3", "probe.py"}, steps...)...)
	if strings.Count(text, "hello_6667") != 2 || strings.Count(text, "hello_7777") != 2 {
		t.Errorf("TCP proxy round-robin: %s", text)
	}
	var rv struct {
		Bound bool `json:"bound"`
		TCP   []struct {
			Targets []struct {
				Target  string `json:"target"`
				Healthy bool   `json:"healthy"`
			} `json:"targets"`
		} `json:"tcp"`
	}
	eventually(t, "both TCP proxy targets healthy", 20*time.Second, func() error {
		u.gantryJSON(&rv, "egress", "router", "web")
		if !rv.Bound || len(rv.TCP) != 1 || len(rv.TCP[0].Targets) != 2 || !rv.TCP[0].Targets[0].Healthy || !rv.TCP[0].Targets[1].Healthy {
			return fmt.Errorf("router view %+v", rv)
		}
		return nil
	})
	out.procs[1].Process.Kill() // the 7777 listener
	out.procs[1].Wait()
	steps = nil
	for range 6 {
		steps = append(steps, "direct", router+":15000")
	}
	text = u.gantry(append([]string{"ssh", "web", "--", "python3", "probe.py"}, steps...)...)
	if strings.Count(text, "hello_6667") != 6 {
		t.Errorf("TCP proxy with a dead target: every connection should reach the live one:\n%s", text)
	}

	// Bad input changes nothing.
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"egress", "proxy", "web", "bad host"}, "not a hostname"},
		{[]string{"egress", "redirect", "web", "smtp.example.com", dest(25)}, "HOST:PORT"},
		{[]string{"egress", "tcp", "web", "16000", "127.0.0.1:5432"}, "platform's own networks"},
		{[]string{"egress", "tcp", "web", "3129", dest(25)}, "platform's own"},
		{[]string{"egress", "redirect", "web", "*:25", dest(25)}, "already redirected"},
	} {
		if msg := u.gantryFails(c.args...); !strings.Contains(msg, c.says) {
			t.Errorf("gantry %s: %q; want %q", strings.Join(c.args, " "), msg, c.says)
		}
	}

	// Unbound again: direct traffic by the app's own rules.
	u.gantry("egress", "proxy", "web", "--off")
	u.gantry("egress", "redirect", "web", "--remove", "2")
	u.gantry("egress", "redirect", "web", "--remove", "1")
	u.gantry("egress", "tcp", "web", "15000", "--remove")
	got = probe("env", "HTTP_PROXY", "direct", dest(6667))
	if got["env HTTP_PROXY"] != "-" || got["direct "+dest(6667)] != "ok hello_6667" {
		t.Errorf("after leaving the router: %v", got)
	}

	// Access log and metrics.
	time.Sleep(1500 * time.Millisecond)
	logs, _ := os.ReadFile(filepath.Join(data, "logs", "egress.log"))
	for _, want := range []string{"app=acme/web mode=proxy", "method=CONNECT dest=\"" + dest(7777) + "\" result=denied status=403", "mode=redirect", "mode=tcp"} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("egress log lacks %q:\n%s", want, logs)
		}
	}
	req, _ := newAuthRequest("GET", "http://"+srv.httpAddr+"/metrics", adminToken(t, cfg))
	resp, err := srv.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io_ReadAll(resp)
	resp.Body.Close()
	for _, want := range []string{
		`gantry_egress_router_connections_total{app="acme/web",destination="` + dest(7777) + `",mode="proxy",result="denied"} 1`,
		`gantry_egress_router_connections_total{app="acme/web",destination="` + dest(6667) + `",mode="redirect",result="ok"} 1`,
		`gantry_egress_router_bytes_total{app="acme/web",direction="in",mode="tcp"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
