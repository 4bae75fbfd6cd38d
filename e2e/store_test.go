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
	srv := startServer(t, data, conf, "127.0.0.1:0", "127.0.0.1:0", append(isolation, storeFlag)...)
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

	srv.stop()
	srv = startServer(t, data, conf, srv.httpAddr, srv.sshAddr, append(isolation, storeFlag)...)
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
