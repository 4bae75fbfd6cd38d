// Package certstore keeps the ACME client's storage (certificates, keys,
// account, challenge tokens) in the platform store, so that in a cluster
// every machine's router serves the same certificates, one machine at a
// time obtains or renews one (certmagic takes the store's lock), and any
// machine answers an HTTP-01 challenge another one started. Values are
// sealed with the platform key.
package certstore

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Storage is certmagic's storage on the platform store.
type Storage struct {
	St *store.Store

	mu    sync.Mutex
	locks map[string]func()
}

var _ certmagic.Storage = (*Storage)(nil)

// Lock takes the store's lock of name (an etcd mutex in a cluster).
func (s *Storage) Lock(ctx context.Context, name string) error {
	unlock, err := s.St.Lock(ctx, "acme:"+name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[string]func(){}
	}
	s.locks[name] = unlock
	return nil
}

// Unlock releases it.
func (s *Storage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	unlock := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if unlock == nil {
		return errors.New("certstore: unlock of a lock not held: " + name)
	}
	unlock()
	return nil
}

func (s *Storage) Store(_ context.Context, key string, value []byte) error {
	item := store.ACMEItem{Value: base64.StdEncoding.EncodeToString(value), Modified: time.Now().UTC()}
	return s.St.Update(func(tx *store.Tx) error { return tx.Put(store.ACMEKey(key), &item) })
}

func (s *Storage) get(key string) (store.ACMEItem, error) {
	var item store.ACMEItem
	err := s.St.View(func(tx *store.Tx) error { return tx.Get(store.ACMEKey(key), &item) })
	if errors.Is(err, store.ErrNotFound) {
		return item, fs.ErrNotExist
	}
	return item, err
}

func (s *Storage) Load(_ context.Context, key string) ([]byte, error) {
	item, err := s.get(key)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(item.Value)
}

// Delete removes key and every key under it.
func (s *Storage) Delete(_ context.Context, key string) error {
	return s.St.Update(func(tx *store.Tx) error {
		keys, err := store.ACMEKeys(tx, key+"/")
		if err != nil {
			return err
		}
		for _, k := range append(keys, key) {
			if err := tx.Delete(store.ACMEKey(k)); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
}

func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List lists the keys under path: its direct children, or every key
// below it.
func (s *Storage) List(_ context.Context, path string, recursive bool) ([]string, error) {
	prefix := strings.TrimSuffix(path, "/") + "/"
	if path == "" {
		prefix = ""
	}
	var keys []string
	if err := s.St.View(func(tx *store.Tx) error {
		var err error
		keys, err = store.ACMEKeys(tx, prefix)
		return err
	}); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if !recursive {
			rest := strings.TrimPrefix(k, prefix)
			if first, _, deeper := strings.Cut(rest, "/"); deeper {
				k = prefix + first
			}
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fs.ErrNotExist
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes key: an item, or a "directory" when keys are under it.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	item, err := s.get(key)
	if err == nil {
		raw, _ := base64.StdEncoding.DecodeString(item.Value)
		return certmagic.KeyInfo{Key: key, Modified: item.Modified, Size: int64(len(raw)), IsTerminal: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return certmagic.KeyInfo{}, err
	}
	if below, err := s.List(ctx, key, false); err == nil && len(below) > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fs.ErrNotExist
}
