// Package store owns Gantry's durable state: typed records kept as JSON under
// hierarchical keys ("apps/acme/blog"), read and written in transactions, with
// a revision counter that every committed write bumps and that watchers follow.
//
// It is the only state of the control plane: every other role can be
// restarted and rebuild itself from here. The single-machine implementation is
// SQLite (pure Go); the key layout is chosen so that the same interface can
// sit over etcd later. The store must not know about processes, sockets or
// files other than its database.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned when a key does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned by Create when the key is already present.
var ErrExists = errors.New("already exists")

// ErrBusy is returned when the database could not be had within the
// store's wait (another transaction held it too long, or another process
// locked the file): the caller should answer "try again", never guess.
var ErrBusy = errors.New("the store is busy: the database is locked or slow; try again in a few seconds (the server log says more)")

// DefaultWait bounds how long a transaction waits for the database.
const DefaultWait = 5 * time.Second

// Store is a transactional key/value store of JSON records.
type Store struct {
	db *sql.DB
	// Wait bounds how long a transaction waits for the database
	// (DefaultWait); past it, ErrBusy.
	Wait time.Duration

	mu   sync.Mutex
	rev  int64
	subs map[chan int64]struct{}

	keyMu sync.Mutex // rotation
	keys  *keyring
}

// Open opens (creating if needed) the database at path.
func Open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	// One connection: the control plane's writes are few, and a single
	// writer keeps SQLite free of busy errors.
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, rev INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
		`INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 0)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("initialising store %s: %w", path, err)
		}
	}
	s := &Store{db: db, Wait: DefaultWait, subs: map[chan int64]struct{}{}}
	if err := db.QueryRow(`SELECT value FROM meta WHERE name='rev'`).Scan(&s.rev); err != nil {
		db.Close()
		return nil, fmt.Errorf("reading store revision: %w", err)
	}
	if s.keys, err = loadKeyring(KeyFile(path)); err != nil {
		db.Close()
		return nil, err
	}
	// Secrets written before they were sealed are sealed now.
	if _, err := s.reseal(false); err != nil {
		db.Close()
		return nil, fmt.Errorf("sealing the secrets in the store: %w", err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Rev returns the revision of the last committed write.
func (s *Store) Rev() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// begin starts a transaction on the one connection, waiting for it at
// most s.Wait; the returned release gives the connection back.
func (s *Store) begin(what string) (*sql.Tx, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.Wait)
	defer cancel()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("starting %s: waited %v for the database: %w", what, s.Wait, ErrBusy)
		}
		return nil, nil, fmt.Errorf("starting %s: %w", what, busy(err))
	}
	tx, err := conn.BeginTx(context.Background(), nil)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", what, busy(err))
	}
	return tx, func() { conn.Close() }, nil
}

// busy turns SQLite's "database is locked" (SQLITE_BUSY, after the busy
// timeout) and SQLITE_LOCKED into ErrBusy.
func busy(err error) error {
	var c interface{ Code() int }
	if errors.As(err, &c) && (c.Code()&0xff == 5 || c.Code()&0xff == 6) {
		return fmt.Errorf("%w (%v)", ErrBusy, err)
	}
	return err
}

// Tx is a transaction. It must not be used after the function given to View
// or Update returns.
type Tx struct {
	keys     *keyring
	tx       *sql.Tx
	writable bool
	wrote    bool
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Tx) error) error {
	sqlTx, release, err := s.begin("read")
	if err != nil {
		return err
	}
	defer release()
	defer sqlTx.Rollback()
	return fn(&Tx{tx: sqlTx, keys: s.keys})
}

// Update runs fn in a read-write transaction and commits it if fn returns
// nil. A commit that wrote anything bumps the revision and wakes watchers.
func (s *Store) Update(fn func(tx *Tx) error) error {
	sqlTx, release, err := s.begin("write")
	if err != nil {
		return err
	}
	defer release()
	defer sqlTx.Rollback()
	tx := &Tx{tx: sqlTx, writable: true, keys: s.keys}
	if err := fn(tx); err != nil {
		return err
	}
	if !tx.wrote {
		return nil
	}
	var rev int64
	if err := sqlTx.QueryRow(`UPDATE meta SET value = value + 1 WHERE name='rev' RETURNING value`).Scan(&rev); err != nil {
		return fmt.Errorf("bumping revision: %w", busy(err))
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", busy(err))
	}
	s.mu.Lock()
	s.rev = rev
	for ch := range s.subs {
		select {
		case <-ch: // drop the stale value: watchers only need the latest
		default:
		}
		ch <- rev
	}
	s.mu.Unlock()
	return nil
}

// Watch returns a channel that receives the revision after each committed
// write, coalesced: a slow reader sees only the latest. The channel is
// closed when ctx is done.
func (s *Store) Watch(ctx context.Context) <-chan int64 {
	ch := make(chan int64, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.subs, ch)
		close(ch)
		s.mu.Unlock()
	}()
	return ch
}

// Get decodes the record at key into v. It returns ErrNotFound if absent.
func (t *Tx) Get(key string, v any) error {
	var raw []byte
	err := t.tx.QueryRow(`SELECT value FROM kv WHERE key = ?`, key).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return t.open(key, v)
}

// open opens the secret fields of a record just read.
func (t *Tx) open(key string, v any) error {
	if o, ok := v.(openable); ok && t.keys != nil {
		if err := o.openSecrets(t.keys.open); err != nil {
			return fmt.Errorf("reading %s: %w", key, err)
		}
	}
	return nil
}

// Has reports whether key exists.
func (t *Tx) Has(key string) (bool, error) {
	var n int
	err := t.tx.QueryRow(`SELECT count(*) FROM kv WHERE key = ?`, key).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	return n > 0, nil
}

// Put writes v at key, replacing any record there.
func (t *Tx) Put(key string, v any) error {
	if !t.writable {
		return fmt.Errorf("writing %s: read-only transaction", key)
	}
	if sv, ok := v.(sealable); ok && t.keys != nil {
		var err error
		if v, err = sv.sealed(t.keys.seal); err != nil {
			return fmt.Errorf("sealing %s: %w", key, err)
		}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	if _, err := t.tx.Exec(`INSERT INTO kv (key, value, rev) VALUES (?, ?, (SELECT value FROM meta WHERE name='rev') + 1)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev`, key, raw); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	t.wrote = true
	return nil
}

// Create writes v at key only if the key is absent; otherwise ErrExists.
func (t *Tx) Create(key string, v any) error {
	ok, err := t.Has(key)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s: %w", key, ErrExists)
	}
	return t.Put(key, v)
}

// Delete removes key. Deleting an absent key is not an error.
func (t *Tx) Delete(key string) error {
	if !t.writable {
		return fmt.Errorf("deleting %s: read-only transaction", key)
	}
	if _, err := t.tx.Exec(`DELETE FROM kv WHERE key = ?`, key); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	t.wrote = true
	return nil
}

// Scan calls fn for every key that starts with prefix, in key order.
func (t *Tx) Scan(prefix string, fn func(key string, raw []byte) error) error {
	rows, err := t.tx.Query(`SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key`, prefix, prefixEnd(prefix))
	if err != nil {
		return fmt.Errorf("listing %s: %w", prefix, err)
	}
	type kv struct {
		k string
		v []byte
	}
	var all []kv
	for rows.Next() {
		var e kv
		if err := rows.Scan(&e.k, &e.v); err != nil {
			rows.Close()
			return fmt.Errorf("listing %s: %w", prefix, err)
		}
		all = append(all, e)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("listing %s: %w", prefix, err)
	}
	for _, e := range all {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// List decodes every record under prefix.
func List[T any](t *Tx, prefix string) ([]T, error) {
	var out []T
	err := t.Scan(prefix, func(key string, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		if err := t.open(key, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func prefixEnd(prefix string) string {
	if prefix == "" {
		return "\xff"
	}
	return prefix + "\xff"
}
