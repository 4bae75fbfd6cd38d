package certstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/control/store/etcdtest"
)

func TestStorage(t *testing.T) {
	st, err := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Storage{St: st}
	ctx := context.Background()
	key := "certificates/acme-v02/www.shop.test/www.shop.test.key"
	if _, err := s.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("load of nothing: %v; want fs.ErrNotExist", err)
	}
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n")
	if err := s.Store(ctx, key, secret); err != nil {
		t.Fatal(err)
	}
	s.Store(ctx, "certificates/acme-v02/www.shop.test/www.shop.test.crt", []byte("cert"))
	s.Store(ctx, "certificates/acme-v02/blog.test/blog.test.crt", []byte("cert2"))
	if got, err := s.Load(ctx, key); err != nil || string(got) != string(secret) {
		t.Errorf("load: %q %v", got, err)
	}
	// Sealed in the store: the key's bytes are not there in the clear.
	st.View(func(tx *store.Tx) error {
		return tx.Scan("acme/", func(k string, raw []byte) error {
			if strings.Contains(string(raw), "secret") || strings.Contains(string(raw), "LS0tLS1CRUdJTi") {
				t.Errorf("record %s holds the value in the clear: %s", k, raw)
			}
			return nil
		})
	})
	if got, err := s.List(ctx, "certificates/acme-v02", false); err != nil || fmt.Sprint(got) != "[certificates/acme-v02/blog.test certificates/acme-v02/www.shop.test]" {
		t.Errorf("list: %v %v", got, err)
	}
	if got, _ := s.List(ctx, "certificates", true); len(got) != 3 {
		t.Errorf("recursive list: %v", got)
	}
	if ki, err := s.Stat(ctx, key); err != nil || !ki.IsTerminal || ki.Size != int64(len(secret)) {
		t.Errorf("stat of an item: %+v %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "certificates/acme-v02/www.shop.test"); err != nil || ki.IsTerminal {
		t.Errorf("stat of a directory: %+v %v", ki, err)
	}
	if err := s.Delete(ctx, "certificates/acme-v02/www.shop.test"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, key) || !s.Exists(ctx, "certificates/acme-v02/blog.test/blog.test.crt") {
		t.Error("delete of a directory: wrong keys left")
	}
	if err := s.Lock(ctx, "issue_cert_blog.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "issue_cert_blog.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "never"); err == nil {
		t.Error("unlock of a lock never taken went through")
	}
}

// On etcd (a cluster), two machines' storages share the items and the
// lock: the second machine waits until the first unlocks.
func TestStorageSharedOnEtcd(t *testing.T) {
	c := etcdtest.Start(t)
	key := filepath.Join(t.TempDir(), "secrets.key")
	open := func() *Storage {
		st, err := store.New(store.NewEtcd(c, "/gantry/"), key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return &Storage{St: st}
	}
	a, b := open(), open()
	ctx := context.Background()
	if err := a.Store(ctx, "certificates/x/x.crt", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Load(ctx, "certificates/x/x.crt"); err != nil || string(got) != "cert" {
		t.Errorf("machine b reads %q %v", got, err)
	}
	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		if err := b.Lock(ctx, "issue_cert_x"); err == nil {
			got <- time.Now()
			b.Unlock(ctx, "issue_cert_x")
		}
	}()
	time.Sleep(300 * time.Millisecond)
	released := time.Now()
	a.Unlock(ctx, "issue_cert_x")
	select {
	case at := <-got:
		if at.Before(released) {
			t.Error("machine b took the lock while machine a held it")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("machine b never got the lock")
	}
}
