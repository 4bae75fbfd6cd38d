package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backends runs a test on a store over each backend.
func backends(t *testing.T, test func(t *testing.T, s *Store)) {
	t.Run("sqlite", func(t *testing.T) { test(t, open(t)) })
	t.Run("mem", func(t *testing.T) {
		s, err := New(NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
		if err != nil {
			t.Fatal(err)
		}
		test(t, s)
	})
}

func TestCreateGetListDelete(t *testing.T) { backends(t, testCreateGetListDelete) }

func testCreateGetListDelete(t *testing.T, s *Store) {
	err := s.Update(func(tx *Tx) error {
		for _, n := range []string{"b", "a", "c"} {
			if err := tx.Create("domains/"+n, &Domain{Name: n, Owner: "u"}); err != nil {
				return err
			}
		}
		return tx.Put("other/x", &Domain{Name: "x"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *Tx) error { return tx.Create("domains/a", &Domain{}) })
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v; want ErrExists", err)
	}
	s.View(func(tx *Tx) error {
		ds, err := List[Domain](tx, "domains/")
		if err != nil {
			t.Fatal(err)
		}
		var names string
		for _, d := range ds {
			names += d.Name
		}
		if names != "abc" {
			t.Errorf("list: got %q; want abc", names)
		}
		var d Domain
		if err := tx.Get("domains/zz", &d); !errors.Is(err, ErrNotFound) {
			t.Errorf("get missing: got %v; want ErrNotFound", err)
		}
		return nil
	})
	s.Update(func(tx *Tx) error { return tx.Delete("domains/b") })
	s.View(func(tx *Tx) error {
		ds, _ := List[Domain](tx, "domains/")
		if len(ds) != 2 {
			t.Errorf("after delete: got %d domains; want 2", len(ds))
		}
		return nil
	})
}

func TestFailedUpdateRollsBack(t *testing.T) { backends(t, testFailedUpdateRollsBack) }

func testFailedUpdateRollsBack(t *testing.T, s *Store) {
	rev := s.Rev()
	boom := errors.New("boom")
	err := s.Update(func(tx *Tx) error {
		tx.Put("k/1", &User{Name: "x"})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v; want boom", err)
	}
	s.View(func(tx *Tx) error {
		if ok, _ := tx.Has("k/1"); ok {
			t.Error("write of a failed update is visible")
		}
		return nil
	})
	if s.Rev() != rev {
		t.Errorf("rev moved on a failed update: %d -> %d", rev, s.Rev())
	}
}

func TestWatchSeesLatestRevision(t *testing.T) { backends(t, testWatchSeesLatestRevision) }

func testWatchSeesLatestRevision(t *testing.T, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	for i := 0; i < 5; i++ {
		s.Update(func(tx *Tx) error { return tx.Put("k", &User{}) })
	}
	select {
	case rev := <-ch:
		if rev != s.Rev() {
			t.Errorf("watch: got rev %d; want latest %d", rev, s.Rev())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event")
	}
	cancel()
	for range ch {
	}
}

func TestRevisionSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, _ := Open(path)
	s.Update(func(tx *Tx) error { return tx.Put("k", &User{}) })
	rev := s.Rev()
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Rev() != rev {
		t.Errorf("reopened rev: got %d; want %d", s2.Rev(), rev)
	}
}

// TestBusy: a database locked by another process, or held by a slow
// transaction, gives ErrBusy after a bounded wait, never a hang or an
// error that looks like something else (not found, a bad token).
func TestBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Update(func(tx *Tx) error { return tx.Put("k", "v") })

	t.Run("held-by-a-transaction", func(t *testing.T) {
		s.b.(*SQLite).wait = 100 * time.Millisecond
		defer func() { s.b.(*SQLite).wait = DefaultWait }()
		inside, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
		go func() {
			s.View(func(*Tx) error { close(inside); <-release; return nil })
			close(done)
		}()
		<-inside
		var v string
		err := s.View(func(tx *Tx) error { return tx.Get("k", &v) })
		close(release)
		<-done
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("read while the database is held: %v; want ErrBusy", err)
		}
	})
	t.Run("locked-by-another-process", func(t *testing.T) {
		other, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		conn, err := other.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
			t.Fatal(err)
		}
		err = s.Update(func(tx *Tx) error { return tx.Put("k", "w") })
		conn.ExecContext(context.Background(), "ROLLBACK")
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("write while another process locks the file: %v; want ErrBusy", err)
		}
		var v string
		if err := s.View(func(tx *Tx) error { return tx.Get("k", &v) }); err != nil || v != "v" {
			t.Fatalf("after the lock: %q %v; want v", v, err)
		}
	})
}
