// Package store owns Gantry's durable state: typed records kept as JSON under
// hierarchical keys ("apps/acme/blog"), read and written in transactions, with
// a revision counter that every committed write bumps and that watchers follow.
//
// It is the only state of the control plane: every other role can be
// restarted and rebuild itself from here. Records are kept by a Backend
// that moves bytes under keys in serializable transactions and counts
// revisions: SQLite (pure Go) on one machine (sqlite.go); etcd will be
// another for a cluster. JSON, the sealing of secrets and the key layout
// are the Store's, above any backend. The store must not know about
// processes, sockets or files other than its database.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

// Backend keeps the records' bytes. View and Update run fn in one
// serializable transaction; Update commits when fn returns nil and, if fn
// wrote, bumps the revision and returns it.
type Backend interface {
	View(fn func(KV) error) error
	Update(fn func(KV) error) (rev int64, err error)
	// Rev is the revision of the last committed write.
	Rev() (int64, error)
	Close() error
}

// KV is a backend's transaction.
type KV interface {
	// Get returns the value at key (ErrNotFound if absent).
	Get(key string) ([]byte, error)
	Put(key string, value []byte) error
	// Delete removes key; an absent key is not an error.
	Delete(key string) error
	// Scan calls fn for every key that starts with prefix, in key order.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// Store is a transactional key/value store of JSON records.
type Store struct {
	b Backend

	mu   sync.Mutex
	rev  int64
	subs map[chan int64]struct{}

	stopWatch context.CancelFunc // the backend's watch, if it has one

	local localPresence // presence on one machine (see KeepAlive)

	keyMu sync.Mutex // rotation
	keys  *keyring

	frozen atomic.Bool // changes refused (Freeze)
}

// ErrFrozen refuses a change while the store moves to etcd.
var ErrFrozen = errors.New("the platform is moving its records to etcd (gantry admin store migrate): changes are refused for a few seconds; try again")

// Freeze refuses every change (ErrFrozen) until thawed, and puts what
// SQLite holds in its write-ahead log into the database file, so that
// another process reading it sees every record.
func (s *Store) Freeze(on bool) error {
	s.frozen.Store(on)
	if c, ok := s.b.(interface{ Checkpoint() error }); ok && on {
		return c.Checkpoint()
	}
	return nil
}

// Open opens (creating if needed) the SQLite database at path, its
// platform key beside it.
func Open(path string) (*Store, error) {
	b, err := OpenSQLite(path, DefaultWait)
	if err != nil {
		return nil, err
	}
	s, err := New(b, KeyFile(path))
	if err != nil {
		b.Close()
		return nil, err
	}
	return s, nil
}

// New makes a store over a backend, with the platform key at keyFile.
func New(b Backend, keyFile string) (*Store, error) {
	s := &Store{b: b, subs: map[chan int64]struct{}{}}
	var err error
	if s.rev, err = b.Rev(); err != nil {
		return nil, fmt.Errorf("reading store revision: %w", err)
	}
	if s.keys, err = loadKeyring(keyFile); err != nil {
		return nil, err
	}
	// Secrets written before they were sealed are sealed now.
	if _, err := s.reseal(false); err != nil {
		return nil, fmt.Errorf("sealing the secrets in the store: %w", err)
	}
	// A shared backend (etcd) tells of other machines' writes too.
	if w, ok := b.(interface {
		Watch(ctx context.Context, after int64) <-chan int64
	}); ok {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch = cancel
		ch := w.Watch(ctx, s.rev)
		go func() {
			for rev := range ch {
				s.advance(rev)
			}
		}()
	}
	return s, nil
}

// advance records a committed revision and wakes the watchers, once per
// revision whoever wrote it.
func (s *Store) advance(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.rev {
		return
	}
	s.rev = rev
	for ch := range s.subs {
		select {
		case <-ch: // drop the stale value: watchers only need the latest
		default:
		}
		ch <- rev
	}
}

// Close closes the backend.
func (s *Store) Close() error {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	return s.b.Close()
}

// Rev returns the revision of the last committed write.
func (s *Store) Rev() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Tx is a transaction. It must not be used after the function given to View
// or Update returns.
type Tx struct {
	keys     *keyring
	kv       KV
	writable bool
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Tx) error) error {
	return s.b.View(func(kv KV) error { return fn(&Tx{kv: kv, keys: s.keys}) })
}

// Update runs fn in a read-write transaction and commits it if fn returns
// nil. fn may run more than once (etcd runs it again when another
// machine's write came first): it must start from nothing each time. A commit that wrote anything bumps the revision and wakes watchers.
func (s *Store) Update(fn func(tx *Tx) error) error {
	if s.frozen.Load() {
		return ErrFrozen
	}
	rev, err := s.b.Update(func(kv KV) error { return fn(&Tx{kv: kv, writable: true, keys: s.keys}) })
	if err != nil || rev == 0 {
		return err
	}
	s.advance(rev)
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
	raw, err := t.kv.Get(key)
	if errors.Is(err, ErrNotFound) {
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
	_, err := t.kv.Get(key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	return true, nil
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
	if err := t.kv.Put(key, raw); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
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
	if err := t.kv.Delete(key); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// Scan calls fn for every key that starts with prefix, in key order.
func (t *Tx) Scan(prefix string, fn func(key string, raw []byte) error) error {
	return t.kv.Scan(prefix, fn)
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

// Copy copies every record of src into dst as it is (sealed secrets stay
// sealed: both must use the same platform key), in batches small enough
// for any backend's transaction. It returns how many records it copied.
func Copy(src, dst *Store) (int, error) {
	type rec struct {
		k string
		v []byte
	}
	var recs []rec
	err := src.b.View(func(kv KV) error {
		return kv.Scan("", func(k string, v []byte) error {
			recs = append(recs, rec{k, append([]byte(nil), v...)})
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	const batch = 100 // etcd allows 128 operations in a transaction
	for i := 0; i < len(recs); i += batch {
		part := recs[i:min(i+batch, len(recs))]
		rev, err := dst.b.Update(func(kv KV) error {
			for _, r := range part {
				if err := kv.Put(r.k, r.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return i, err
		}
		dst.advance(rev)
	}
	return len(recs), nil
}
