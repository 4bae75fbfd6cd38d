package store

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

func freeURL(t *testing.T) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// startEtcd runs a one-member etcd in the test (embed, as the cluster's
// members will) and returns a client of it.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	client, peer := freeURL(t), freeURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The store's record tests on an etcd backend.
func TestEtcdBackend(t *testing.T) {
	c := startEtcd(t)
	n := 0
	store := func(t *testing.T) *Store {
		n++
		s, err := New(NewEtcd(c, "/test"+string(rune('a'+n))+"/"), filepath.Join(t.TempDir(), "secrets.key"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("create_get_list_delete", func(t *testing.T) { testCreateGetListDelete(t, store(t)) })
	t.Run("failed_update_rolls_back", func(t *testing.T) { testFailedUpdateRollsBack(t, store(t)) })
	t.Run("watch_sees_latest_revision", func(t *testing.T) { testWatchSeesLatestRevision(t, store(t)) })
}

// Two machines' stores over one etcd: a write on one is seen by the other
// and wakes its watchers; concurrent writes to one record both land, one
// after the other (the second transaction runs again on the first's
// result).
func TestEtcdTwoMachines(t *testing.T) {
	c := startEtcd(t)
	key := filepath.Join(t.TempDir(), "secrets.key")
	a, err := New(NewEtcd(c, "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(NewEtcd(c, "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := b.Watch(ctx)
	if err := a.Update(func(tx *Tx) error { return tx.Put(DomainKey("acme"), &Domain{Name: "acme", Owner: "alice"}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case rev := <-watch:
		if rev != a.Rev() || b.Rev() != a.Rev() {
			t.Errorf("b saw revision %d (b.Rev %d); a wrote %d", rev, b.Rev(), a.Rev())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b's watcher did not see a's write")
	}
	var d Domain
	if err := b.View(func(tx *Tx) error { return tx.Get(DomainKey("acme"), &d) }); err != nil || d.Owner != "alice" {
		t.Fatalf("b reads %+v %v", d, err)
	}
	// A counter bumped 20 times from each machine at once ends at 40.
	type counter struct{ N int }
	bump := func(s *Store, done chan<- error) {
		for i := 0; i < 20; i++ {
			if err := s.Update(func(tx *Tx) error {
				var c counter
				tx.Get("other/counter", &c)
				c.N++
				return tx.Put("other/counter", &c)
			}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}
	done := make(chan error, 2)
	go bump(a, done)
	go bump(b, done)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var got counter
	a.View(func(tx *Tx) error { return tx.Get("other/counter", &got) })
	if got.N != 40 {
		t.Errorf("counter %d; want 40 (a lost update)", got.N)
	}
}
