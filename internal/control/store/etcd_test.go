package store

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gantry-paas/gantry/internal/control/store/etcdtest"
)

// startEtcd runs a one-member etcd in the test.
func startEtcd(t *testing.T) *clientv3.Client { return etcdtest.Start(t) }

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

// cutProxy forwards TCP to target until cut: then it drops every
// connection and refuses new ones (a machine cut off from the others).
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				c.Close()
				p.mu.Unlock()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				p.mu.Unlock()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
}

func clientOf(t *testing.T, endpoint string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A machine is live while it renews its presence: others see it; when it
// stops cleanly it is gone at once, and when it is cut off it is gone
// once its lease lapses.
func TestEtcdPresence(t *testing.T) {
	c := startEtcd(t)
	key := filepath.Join(t.TempDir(), "secrets.key")
	observer, err := New(NewEtcd(c, "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	proxy := newCutProxy(t, c.Endpoints()[0][len("http://"):])
	far, err := New(NewEtcd(clientOf(t, "http://"+proxy.ln.Addr().String()), "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	near, err := New(NewEtcd(c, "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nearCtx, stopNear := context.WithCancel(ctx)
	lost := make(chan error, 10)
	if err := far.KeepAlive(ctx, "m2", 2*time.Second, func(err error) { lost <- err }); err != nil {
		t.Fatal(err)
	}
	if err := near.KeepAlive(nearCtx, "m1", 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	live, err := observer.Live()
	if err != nil || !live["m1"] || !live["m2"] || len(live) != 2 {
		t.Fatalf("live %v %v; want m1 and m2", live, err)
	}
	// Presence is no change of the records: no revision for it.
	if rev := observer.Rev(); rev != 0 {
		t.Errorf("revision %d after announcements; want 0", rev)
	}
	stopNear()
	waitFor(t, 2*time.Second, "m1 gone after a clean stop", func() bool { l, _ := observer.Live(); return !l["m1"] })

	proxy.Cut()
	t0 := time.Now()
	waitFor(t, 10*time.Second, "m2 gone after its lease lapsed", func() bool { l, _ := observer.Live(); return !l["m2"] })
	if d := time.Since(t0); d < time.Second {
		t.Errorf("m2 vanished %v after the cut: before its lease could lapse", d)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the cut-off machine was not told its presence lapsed")
	}
}

// Leadership: of two machines one acts at a time; when the leader is cut
// off from etcd it stops acting (its context ends) before the other
// starts, and the other takes over.
func TestEtcdLeadership(t *testing.T) {
	c := startEtcd(t)
	key := filepath.Join(t.TempDir(), "secrets.key")
	proxy := newCutProxy(t, c.Endpoints()[0][len("http://"):])
	a, err := New(NewEtcd(clientOf(t, "http://"+proxy.ln.Addr().String()), "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(NewEtcd(c, "/gantry/"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var mu sync.Mutex
	var log []string // "start NAME" / "stop NAME"
	acting := 0
	act := func(name string) func(ctx context.Context) {
		return func(ctx context.Context) {
			mu.Lock()
			acting++
			if acting > 1 {
				t.Errorf("%s leads while another does", name)
			}
			log = append(log, "start "+name)
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			acting--
			log = append(log, "stop "+name)
			mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Lead(ctx, "scheduler", "a", 2*time.Second, act("a"))
	waitFor(t, 10*time.Second, "a leads", func() bool { l, _ := b.Leader("scheduler"); return l == "a" })
	go b.Lead(ctx, "scheduler", "b", 2*time.Second, act("b"))
	time.Sleep(500 * time.Millisecond)
	proxy.Cut()
	waitFor(t, 15*time.Second, "b leads", func() bool { l, _ := b.Leader("scheduler"); return l == "b" })
	waitFor(t, 5*time.Second, "b acts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(log) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"start a", "stop a", "start b"}; fmt.Sprint(log) != fmt.Sprint(want) {
		t.Errorf("leadership went %v; want %v", log, want)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A machine that ran alone moves to etcd: every record (250, more than
// one etcd transaction holds), sealed secrets included, reads back the
// same on the new store with the same platform key.
func TestCopyToEtcd(t *testing.T) {
	c := startEtcd(t)
	dir := t.TempDir()
	src, err := Open(filepath.Join(dir, "gantry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.Update(func(tx *Tx) error {
		for i := range 250 {
			tx.Put(DomainKey(fmt.Sprintf("d%03d", i)), &Domain{Name: fmt.Sprintf("d%03d", i)})
		}
		return tx.Put(AppKey("d000", "blog"), &App{Name: "blog", Domain: "d000", Env: map[string]string{"SECRET": "hunter2"}})
	})
	dst, err := New(NewEtcd(c, "/gantry/"), KeyFile(filepath.Join(dir, "gantry.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	n, err := Copy(src, dst)
	if err != nil || n != 251 {
		t.Fatalf("copied %d: %v", n, err)
	}
	var app App
	var domains []Domain
	dst.View(func(tx *Tx) error {
		tx.Get(AppKey("d000", "blog"), &app)
		domains, _ = ListDomains(tx)
		return nil
	})
	if app.Env["SECRET"] != "hunter2" || len(domains) != 250 {
		t.Errorf("after the copy: env %v, %d domains", app.Env, len(domains))
	}
}
