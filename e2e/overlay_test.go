package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// peerApp answers / with its version, and /peer?addr=IP:PORT with what
// the gear at that address answers (502 when it cannot be reached).
const peerApp = `const http = require("http");
http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  if (u.pathname === "/peer") {
    const r = http.get("http://" + u.searchParams.get("addr") + "/", { timeout: 1500 }, (pr) => {
      let b = ""; pr.on("data", (d) => b += d); pr.on("end", () => res.end("peer said " + b));
    });
    r.on("timeout", () => r.destroy(new Error("timeout")));
    r.on("error", (e) => { res.statusCode = 502; res.end("peer error " + e.message); });
    return;
  }
  res.end("overlay v1\n");
}).on("upgrade", (req, socket) => { // a WebSocket that echoes text frames
  const accept = require("crypto").createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  socket.on("data", (b) => {
    const len = b[1] & 127, data = Buffer.from(b.slice(6, 6 + len));
    for (let i = 0; i < len; i++) data[i] ^= b[2 + (i % 4)];
    if ((b[0] & 15) === 1) socket.write(Buffer.concat([Buffer.from([0x81, len]), data]));
  });
  socket.on("error", () => {});
}).listen(process.env.PORT, process.env.IP);
`

// netMachine is a machine of the overlay test: a network namespace with
// its own address on a bridge the test makes, running its own server
// with namespaced gears inside.
type netMachine struct {
	machine
	netns, prefix string
}

func (m *netMachine) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"--isolation", "namespaces", "--net-prefix", m.prefix, "--gear-subnet", "10.234.0.0/16",
		"--host", m.addr, "--advertise", m.addr, "--node-name", m.name, "--https", m.addr + ":0", "--node-grace", "5s"}, extra...)
	// HTTP on every address of the machine: the CLI, run on machine 1,
	// talks to its loopback (tokens go over plain HTTP from the machine
	// itself only), the test's clients to its address.
	m.srv = startServerVia(t, []string{"nsenter", "--net=/run/netns/" + m.netns}, m.data, m.cfg, "0.0.0.0:0", m.addr+":0", args...)
}

// client reaches the machine's router from the host.
func (m *netMachine) client() *http.Client {
	_, port, _ := net.SplitHostPort(m.srv.httpAddr)
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, net.JoinHostPort(m.addr, port))
		}}}
}

// TestClusterOverlay: three machines, each a network namespace on a
// bridge with its own server and namespaced gears, joined by the VXLAN
// overlay. Six gears spread 2/2/2 and every router serves them; gears of
// one app reach each other across machines, a gear of another app is
// refused; machine 2 is killed and its namespace deleted under a client
// loop, and its gears serve again on 1 and 3, still reaching each other.
func TestClusterOverlay(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "nsenter", "ip")
	isolationArgs(t, "namespaces") // skips when not root
	id := os.Getpid() % 1000
	root := t.TempDir()
	br := fmt.Sprintf("gto%d", id)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("link", "add", br, "type", "bridge")
	ip("addr", "add", "172.31.77.254/24", "dev", br)
	ip("link", "set", br, "up")
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	var ms []*netMachine
	for i := 1; i <= 3; i++ {
		m := &netMachine{machine: machine{name: fmt.Sprintf("m%d", i), addr: fmt.Sprintf("172.31.77.%d", i),
			data: filepath.Join(root, fmt.Sprintf("m%d", i)), cfg: filepath.Join(root, fmt.Sprintf("m%d.json", i))},
			netns: fmt.Sprintf("gto%d-m%d", id, i), prefix: fmt.Sprintf("go%dm%d", id, i)}
		ms = append(ms, m)
		ip("netns", "add", m.netns)
		host, inner := fmt.Sprintf("gto%dh%d", id, i), fmt.Sprintf("gto%di%d", id, i)
		ip("link", "add", host, "type", "veth", "peer", "name", inner)
		ip("link", "set", host, "master", br, "up")
		ip("link", "set", inner, "netns", m.netns)
		ip("-n", m.netns, "link", "set", "lo", "up")
		ip("-n", m.netns, "addr", "add", m.addr+"/24", "dev", inner)
		ip("-n", m.netns, "link", "set", inner, "up")
		t.Cleanup(func() {
			if m.srv != nil {
				m.kill(true)
			}
			killGears(m.data)
			netplan.RemoveAll(m.prefix) // the gears' namespaces (their links went with the machine's)
			exec.Command("ip", "netns", "del", m.netns).Run()
		})
	}
	m1, m2, m3 := ms[0], ms[1], ms[2]
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range ms {
			m.dumpLog(t, func(l string) bool { return strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") })
		}
	})

	m1.start(t, "--cluster-init")
	var cfg map[string]any
	raw, err := os.ReadFile(m1.cfg)
	if err != nil || json.Unmarshal(raw, &cfg) != nil {
		t.Fatalf("client config: %v %s", err, raw)
	}
	_, port, _ := net.SplitHostPort(m1.srv.httpAddr)
	cfg["server"] = "http://127.0.0.1:" + port
	raw, _ = json.Marshal(cfg)
	os.WriteFile(m1.cfg, raw, 0o600)
	u := newEnv(t, m1.cfg)
	// The CLI runs on machine 1 (its API takes tokens over plain HTTP
	// from the machine itself only); git goes over SSH from the host.
	u.bin = filepath.Join(root, "gantry-on-m1")
	writeFile(t, u.bin, "#!/bin/sh\nexec nsenter --net=/run/netns/"+m1.netns+" "+gantryBin+" \"$@\"\n", 0o755)
	token := func() string {
		var v struct{ Token string }
		u.gantryJSON(&v, "node", "token")
		return v.Token
	}
	joinURL := "https://" + m1.srv.httpsAddr
	m2.start(t, "--join", joinURL, "--token", token())
	m3.start(t, "--join", joinURL, "--token", token())
	var nodes []struct {
		Name, State, Overlay string
		GearBlock            string `json:"gear_block"`
	}
	eventually(t, "three machines up", 30*time.Second, func() error {
		u.gantryJSON(&nodes, "node", "list")
		if len(nodes) != 3 {
			return fmt.Errorf("%+v", nodes)
		}
		for _, n := range nodes {
			if n.State != "up" {
				return fmt.Errorf("%+v", nodes)
			}
		}
		return nil
	})
	blocks := map[string]bool{}
	for _, n := range nodes {
		if n.Overlay != "vxlan" || !strings.HasPrefix(n.GearBlock, "10.234.") || blocks[n.GearBlock] {
			t.Errorf("node %s: overlay %q block %q; want vxlan and a block of its own", n.Name, n.Overlay, n.GearBlock)
		}
		blocks[n.GearBlock] = true
	}

	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "acme")
	work := t.TempDir()
	for _, name := range []string{"blog", "wiki"} {
		var app appJSON
		u.gantryJSON(&app, "app", "create", name, "--type", "nodejs")
		u.runIn(work, "git", "clone", "-q", app.GitURL, name)
		repo := filepath.Join(work, name)
		writeFile(t, filepath.Join(repo, "server.js"), peerApp, 0o644)
		u.runIn(repo, "git", "commit", "-qam", "peer app")
		u.runIn(repo, "git", "push", "-q")
	}
	u.gantry("app", "scale", "blog", "--gears", "6")
	var blog, wiki appJSON
	u.gantryJSON(&blog, "app", "show", "blog")
	u.gantryJSON(&wiki, "app", "show", "wiki")
	if by := gearsByNode(blog); by["m1"] != 2 || by["m2"] != 2 || by["m3"] != 2 {
		t.Fatalf("six gears by machine: %v", by)
	}
	for _, g := range blog.Gears {
		if !strings.HasPrefix(g.IP, "10.234.") {
			t.Errorf("gear %s on %s has address %s, outside the gear subnet", g.ID, g.Node, g.IP)
		}
	}
	host := "blog-acme.localhost"
	for _, m := range ms {
		for range 6 {
			if code, body := get(t, m.client(), m.srv.url(host, "/")); code != 200 || body != "overlay v1\n" {
				t.Fatalf("through %s's router: %d %q", m.name, code, body)
			}
		}
		wsEcho(t, m.client(), m.srv.url(host, "/"), m.name)
	}
	// Gear to gear: every blog gear (on all three machines, the router
	// spreads the requests) reaches each blog gear, and none reaches the
	// wiki's gear.
	peers := func(app appJSON, want bool) {
		t.Helper()
		hc := m1.client()
		for _, g := range app.Gears {
			if g.State != "running" {
				continue
			}
			for range 6 {
				code, body := get(t, hc, m1.srv.url(host, fmt.Sprintf("/peer?addr=%s:%d", g.IP, g.Port)))
				if ok := code == 200 && body == "peer said overlay v1\n"; ok != want {
					t.Errorf("a blog gear to %s's gear %s on %s: %d %q; want reached=%v", app.Name, g.IP, g.Node, code, body, want)
					return
				}
			}
		}
	}
	peers(blog, true)
	peers(wiki, false)
	// A command through machine 1 in a gear of machine 3 runs there, in
	// the gear (its own user, its own address).
	for _, g := range blog.Gears {
		if g.Node == "m3" && g.State == "running" {
			out := u.gantry("ssh", "blog", "--gear", g.ID, "--", "sh", "-c", "'id -u; echo ip=$IP'")
			if strings.Contains(out, "\n0\n") || strings.HasPrefix(out, "0\n") || !strings.Contains(out, "ip="+g.IP) {
				t.Errorf("gantry ssh to gear %s (%s) on m3 through m1: %q", g.ID, g.IP, out)
			}
			break
		}
	}

	// Machine 2 is lost: every process of it killed, its namespace gone.
	var stop atomic.Bool
	var failed, total atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		hc := m1.client()
		for !stop.Load() {
			resp, err := hc.Get(m1.srv.url(host, "/"))
			total.Add(1)
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	m2.kill(true)
	exec.Command("ip", "netns", "del", m2.netns).Run()
	eventually(t, "machine 2's gears serving on 1 and 3", 60*time.Second, func() error {
		u.gantryJSON(&blog, "app", "show", "blog")
		if by := gearsByNode(blog); by["m2"] != 0 || by["m1"]+by["m3"] != 6 {
			return fmt.Errorf("gears by machine: %v", by)
		}
		return nil
	})
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	t.Logf("client loop through machine 1 while machine 2 died: %d of %d requests failed", failed.Load(), total.Load())
	if failed.Load() > 8 {
		t.Errorf("%d of %d requests failed while machine 2 died; want only those in flight on it", failed.Load(), total.Load())
	}
	for _, m := range []*netMachine{m1, m3} {
		if code, body := get(t, m.client(), m.srv.url(host, "/")); code != 200 || body != "overlay v1\n" {
			t.Errorf("through %s after machine 2 died: %d %q", m.name, code, body)
		}
	}
	peers(blog, true)

	// Idle to zero, woken by a request through machine 3's router.
	u.gantry("app", "idle", "wiki", "--now")
	eventually(t, "the wiki idle", 30*time.Second, func() error {
		u.gantryJSON(&wiki, "app", "show", "wiki")
		if n := len(gearsByNode(wiki)); n != 0 {
			return fmt.Errorf("%d machines run its gears", n)
		}
		return nil
	})
	if code, body := get(t, m3.client(), m3.srv.url("wiki-acme.localhost", "/")); code != 200 || body != "overlay v1\n" {
		t.Errorf("the idle wiki through machine 3: %d %q", code, body)
	}
	// The end: machines 1 and 3 go as machine 2 did. (A clean stop of the
	// one left last would wait for a store without quorum, up to its
	// stages' limits.)
	m1.kill(true)
	m3.kill(true)
}
