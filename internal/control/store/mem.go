package store

import (
	"maps"
	"sort"
	"strings"
	"sync"
)

// Mem is a backend in memory: each transaction holds one lock (so they
// are serializable) and a write works on a copy that replaces the records
// on commit. It keeps nothing across a restart; it is the second backend
// that keeps the Backend seam honest (the store's tests run on both) and a
// store for tools and tests that need no file.
type Mem struct {
	mu   sync.Mutex
	recs map[string][]byte
	rev  int64
}

// NewMem returns an empty in-memory backend.
func NewMem() *Mem { return &Mem{recs: map[string][]byte{}} }

func (m *Mem) Close() error { return nil }

func (m *Mem) Rev() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev, nil
}

func (m *Mem) View(fn func(KV) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(&memKV{recs: m.recs, readOnly: true})
}

func (m *Mem) Update(fn func(KV) error) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv := &memKV{recs: maps.Clone(m.recs)}
	if err := fn(kv); err != nil {
		return 0, err
	}
	if !kv.wrote {
		return 0, nil
	}
	m.recs = kv.recs
	m.rev++
	return m.rev, nil
}

type memKV struct {
	recs     map[string][]byte
	readOnly bool
	wrote    bool
}

func (t *memKV) Get(key string) ([]byte, error) {
	v, ok := t.recs[key]
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

func (t *memKV) Put(key string, value []byte) error {
	t.recs[key] = append([]byte(nil), value...)
	t.wrote = true
	return nil
}

func (t *memKV) Delete(key string) error {
	delete(t.recs, key)
	t.wrote = true
	return nil
}

func (t *memKV) Scan(prefix string, fn func(key string, value []byte) error) error {
	var keys []string
	for k := range t.recs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, t.recs[k]); err != nil {
			return err
		}
	}
	return nil
}
