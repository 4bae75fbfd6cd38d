package e2e

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// TestEtcdStore: a server whose records live in an etcd the operator runs
// (here a member embedded in the test) serves as with SQLite, keeps no
// SQLite database, and finds its apps again after a restart.
func TestEtcdStore(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	free := func() url.URL {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	client, peer := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close) // after the servers stop (cleanups run last-in first-out)
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}

	isolation := []string{"--isolation", "process"}
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data) })
	conf := filepath.Join(root, "admin.json")
	storeFlag := "--store=etcd://" + client.Host
	srv := startServer(t, data, conf, "127.0.0.1:0", "127.0.0.1:0", append(isolation, storeFlag, "--node-name", "m1")...)
	u := newEnv(t, conf)
	hc := srv.httpClient()
	u.gantry("domain", "create", "acme")
	var app appJSON
	u.gantryJSON(&app, "app", "create", "blog", "--type", "nodejs")
	if code, body := get(t, hc, srv.url("blog-acme.localhost", "/")); code != 200 || !strings.Contains(body, "Welcome to blog") {
		t.Fatalf("the starter page with an etcd store: %d %q", code, body)
	}
	if _, err := os.Stat(filepath.Join(data, "gantry.db")); err == nil {
		t.Error("a SQLite database was made beside an etcd store")
	}
	if len(app.Gears) != 1 || app.Gears[0].Node != "m1" {
		t.Errorf("gears %+v; want one on m1", app.Gears)
	}

	// Nodes: a second machine on the same store (sharing the platform
	// key, as a join gives it) is listed beside the first; it cannot take
	// the name of a machine that is up; when it stops it is down at once.
	data2 := filepath.Join(root, "data2")
	os.MkdirAll(data2, 0o700)
	key, err := os.ReadFile(filepath.Join(data, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data2, "secrets.key"), key, 0o600)
	second := []string{"server", "--data", data2, "--http", "127.0.0.2:0", "--https", "off", "--ssh", "127.0.0.2:0", "--client-config", filepath.Join(root, "m2.json"),
		storeFlag, "--isolation", "process", "--advertise", "127.0.0.2"}
	if out := u.gantryFails(append(second, "--node-name", "m1")...); !strings.Contains(out, "node name m1 is in use by the machine at 127.0.0.1") {
		t.Errorf("a second machine named as the first: %s", out)
	}
	m2 := startServer(t, data2, filepath.Join(root, "m2.json"), "127.0.0.2:0", "127.0.0.2:0", storeFlag, "--isolation", "process", "--advertise", "127.0.0.2", "--node-name", "m2", "--https", "off")
	var nodes []struct {
		Name, Address, State string
		Gears                int
		MemoryTotal          int64 `json:"memory_total"`
	}
	u.gantryJSON(&nodes, "node", "list")
	if len(nodes) != 2 || nodes[0].Name != "m1" || nodes[0].State != "up" || nodes[0].Gears != 1 || nodes[0].MemoryTotal == 0 ||
		nodes[1].Name != "m2" || nodes[1].State != "up" || nodes[1].Address != "127.0.0.2" {
		t.Errorf("node list: %+v; want m1 (one gear) and m2 up", nodes)
	}
	m2.stop()
	u.gantryJSON(&nodes, "node", "list")
	if len(nodes) != 2 || nodes[1].State != "down" {
		t.Errorf("after m2 stopped, node list: %+v; want m2 down", nodes)
	}
	u.gantry("node", "remove", "m2")
	if out := u.gantryFails("node", "remove", "m1"); !strings.Contains(out, "is up") {
		t.Errorf("removing the machine that serves: %s", out)
	}

	srv.stop()
	srv = startServer(t, data, conf, srv.httpAddr, srv.sshAddr, append(isolation, storeFlag, "--node-name", "m1")...)
	if out := u.gantry("app", "list"); !strings.Contains(out, "blog") {
		t.Errorf("after a restart on etcd, app list:\n%s", out)
	}
	if code, body := get(t, srv.httpClient(), srv.url("blog-acme.localhost", "/")); code != 200 || !strings.Contains(body, "Welcome to blog") {
		t.Errorf("after a restart on etcd: %d %q", code, body)
	}

	if out := u.gantryFails("server", "--data", t.TempDir(), "--store", "etcd://127.0.0.1:1", "--http", "127.0.0.1:0", "--https", "off", "--ssh", "127.0.0.1:0"); !strings.Contains(out, "etcd does not answer") {
		t.Errorf("a store that does not answer: %s", out)
	}
}
