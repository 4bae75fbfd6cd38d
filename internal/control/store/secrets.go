package store

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Secrets at rest: env values, cartridge passwords and alias private keys
// are sealed (AES-256-GCM) with the platform key before they are written,
// and opened when read, so that a copy of the database alone gives none
// of them away. The key lives in its own file beside the database
// (secrets.key, 0600), never in it. The file holds a keyring: every key a
// value may still be sealed with (each value names its key), the last one
// sealing new values; rotation adds a key, reseals everything in one
// transaction, then drops the old keys, so a crash at any point leaves
// every value readable.

// sealPrefix marks a sealed value: gantry:sealed:KEYID:BASE64(nonce|ct).
const sealPrefix = "gantry:sealed:"

// KeyFile is where the platform key of the database at dbPath lives.
func KeyFile(dbPath string) string { return filepath.Join(filepath.Dir(dbPath), "secrets.key") }

type keyring struct {
	mu   sync.RWMutex // rotation changes the keys while others read
	path string
	ids  []int // in order; the last seals
	aead map[int]cipher.AEAD
	raw  map[int][]byte
}

// loadKeyring reads the key file, making one with a fresh key if absent.
func loadKeyring(path string) (*keyring, error) {
	k := &keyring{path: path, aead: map[int]cipher.AEAD{}, raw: map[int][]byte{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := k.add(); err != nil {
			return nil, err
		}
		return k, k.write()
	}
	if err != nil {
		return nil, fmt.Errorf("reading the platform key %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		id, err1 := strconv.Atoi(f[0])
		key, err2 := hex.DecodeString(f[1])
		if err1 != nil || err2 != nil || len(key) != 32 {
			return nil, fmt.Errorf("the platform key file %s is damaged (line %q): restore it from where you keep it", path, f[0])
		}
		if err := k.set(id, key); err != nil {
			return nil, err
		}
	}
	if len(k.ids) == 0 {
		return nil, fmt.Errorf("the platform key file %s holds no key: restore it from where you keep it", path)
	}
	return k, nil
}

func (k *keyring) set(id int, key []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	if _, ok := k.aead[id]; !ok {
		k.ids = append(k.ids, id)
	}
	k.aead[id], k.raw[id] = aead, key
	return nil
}

// add makes a new key the sealing one.
func (k *keyring) add() (int, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return 0, err
	}
	k.mu.RLock()
	id := 1
	for _, i := range k.ids {
		id = max(id, i+1)
	}
	k.mu.RUnlock()
	return id, k.set(id, key)
}

// keepOnly drops every key but the sealing one.
func (k *keyring) keepOnly() {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur := k.ids[len(k.ids)-1]
	for _, id := range k.ids[:len(k.ids)-1] {
		delete(k.aead, id)
		delete(k.raw, id)
	}
	k.ids = []int{cur}
}

// write replaces the key file atomically (0600, synced).
func (k *keyring) write() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var b strings.Builder
	b.WriteString("# Gantry platform key: seals secrets in the database beside it. Keep a copy apart from backups of the database.\n")
	ids := append([]int(nil), k.ids...)
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "%d %s\n", id, hex.EncodeToString(k.raw[id]))
	}
	tmp := k.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing the platform key: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, k.path)
}

// seal encrypts a value with the sealing key ("" stays "").
func (k *keyring) seal(v string) (string, error) {
	if v == "" {
		return v, nil
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	id := k.ids[len(k.ids)-1]
	aead := k.aead[id]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(v)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ct := aead.Seal(nonce, nonce, []byte(v), nil)
	return sealPrefix + strconv.Itoa(id) + ":" + base64.RawStdEncoding.EncodeToString(ct), nil
}

// open decrypts a sealed value; a value written before sealing existed is
// returned as it is.
func (k *keyring) open(v string) (string, error) {
	rest, ok := strings.CutPrefix(v, sealPrefix)
	if !ok {
		return v, nil
	}
	idStr, b64, ok := strings.Cut(rest, ":")
	id, err := strconv.Atoi(idStr)
	if !ok || err != nil {
		return "", errors.New("a sealed value is damaged")
	}
	k.mu.RLock()
	aead := k.aead[id]
	k.mu.RUnlock()
	if aead == nil {
		return "", fmt.Errorf("a value is sealed with key %d, which %s does not hold: restore the key file that goes with this database", id, k.path)
	}
	ct, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(ct) < aead.NonceSize() {
		return "", errors.New("a sealed value is damaged")
	}
	plain, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], nil)
	if err != nil {
		return "", fmt.Errorf("a sealed value does not open with key %d: the key file does not go with this database", id)
	}
	return string(plain), nil
}

// sealable records have secret fields: sealed returns a copy with them
// sealed (the caller's value is not changed).
type sealable interface {
	sealed(f func(string) (string, error)) (any, error)
}

// openable records open their secret fields in place after reading.
type openable interface {
	openSecrets(f func(string) (string, error)) error
}

func (a App) sealed(f func(string) (string, error)) (any, error) {
	c := a
	if a.Env != nil {
		c.Env = make(map[string]string, len(a.Env))
		for k, v := range a.Env {
			s, err := f(v)
			if err != nil {
				return nil, err
			}
			c.Env[k] = s
		}
	}
	if a.Cartridges != nil {
		c.Cartridges = append([]Cartridge(nil), a.Cartridges...)
		for i := range c.Cartridges {
			s, err := f(c.Cartridges[i].Password)
			if err != nil {
				return nil, err
			}
			c.Cartridges[i].Password = s
		}
	}
	if a.Registry != nil {
		r := *a.Registry
		s, err := f(r.Password)
		if err != nil {
			return nil, err
		}
		r.Password = s
		c.Registry = &r
	}
	if a.Drains != nil {
		c.Drains = append([]Drain(nil), a.Drains...)
		for i := range c.Drains {
			s, err := f(c.Drains[i].URL)
			if err != nil {
				return nil, err
			}
			c.Drains[i].URL = s
		}
	}
	return c, nil
}

func (a *App) openSecrets(f func(string) (string, error)) error {
	for k, v := range a.Env {
		s, err := f(v)
		if err != nil {
			return fmt.Errorf("env %s: %w", k, err)
		}
		a.Env[k] = s
	}
	for i := range a.Cartridges {
		s, err := f(a.Cartridges[i].Password)
		if err != nil {
			return fmt.Errorf("cartridge %s: %w", a.Cartridges[i].Name, err)
		}
		a.Cartridges[i].Password = s
	}
	if a.Registry != nil {
		s, err := f(a.Registry.Password)
		if err != nil {
			return fmt.Errorf("registry login: %w", err)
		}
		a.Registry.Password = s
	}
	for i := range a.Drains {
		s, err := f(a.Drains[i].URL)
		if err != nil {
			return fmt.Errorf("drain %s: %w", a.Drains[i].ID, err)
		}
		a.Drains[i].URL = s
	}
	return nil
}

func (b BackupTarget) sealed(f func(string) (string, error)) (any, error) {
	var err error
	if b.Password, err = f(b.Password); err != nil {
		return nil, err
	}
	b.SSHKey, err = f(b.SSHKey)
	return b, err
}

func (b *BackupTarget) openSecrets(f func(string) (string, error)) error {
	var err error
	if b.Password, err = f(b.Password); err != nil {
		return err
	}
	b.SSHKey, err = f(b.SSHKey)
	return err
}

func (c Cert) sealed(f func(string) (string, error)) (any, error) {
	s, err := f(c.KeyPEM)
	c.KeyPEM = s
	return c, err
}

func (c *Cert) openSecrets(f func(string) (string, error)) error {
	s, err := f(c.KeyPEM)
	c.KeyPEM = s
	return err
}

// ACMEItem is an item of the ACME client's storage (certificates, their
// keys, account keys, challenge tokens), shared by every machine: the
// value is sealed.
type ACMEItem struct {
	Value    string    `json:"value"` // base64, sealed
	Modified time.Time `json:"modified"`
}

func (a ACMEItem) sealed(f func(string) (string, error)) (any, error) {
	s, err := f(a.Value)
	a.Value = s
	return a, err
}

func (a *ACMEItem) openSecrets(f func(string) (string, error)) error {
	s, err := f(a.Value)
	a.Value = s
	return err
}

// ACMEKey is the record of an item of the ACME client's storage.
func ACMEKey(key string) string { return "acme/" + key }

// ACMEKeys lists the ACME storage's keys under prefix (without "acme/").
func ACMEKeys(tx *Tx, prefix string) ([]string, error) {
	var out []string
	err := tx.Scan("acme/"+prefix, func(key string, _ []byte) error {
		out = append(out, strings.TrimPrefix(key, "acme/"))
		return nil
	})
	return out, err
}

// sealedPrefixes are where records with secrets live, with a new
// record of each.
var sealedPrefixes = map[string]func() openable{
	"apps/":   func() openable { return &App{} },
	"certs/":  func() openable { return &Cert{} },
	"acme/":   func() openable { return &ACMEItem{} },
	"backup/": func() openable { return &BackupTarget{} },
}

// reseal rewrites every record with secrets that holds a plain value, or
// (all) every one: after rotation, with the new key.
func (s *Store) reseal(all bool) (int, error) {
	n := 0
	err := s.Update(func(tx *Tx) error {
		n = 0
		for prefix, fresh := range sealedPrefixes {
			err := tx.Scan(prefix, func(key string, raw []byte) error {
				if !all && !hasPlainSecret(fresh(), raw) {
					return nil
				}
				v := fresh()
				if err := tx.Get(key, v); err != nil {
					return err
				}
				n++
				return tx.Put(key, v)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// hasPlainSecret says whether a stored record has a secret not sealed.
func hasPlainSecret(o openable, raw []byte) bool {
	plain := false
	check := func(v string) (string, error) {
		if v != "" && !strings.HasPrefix(v, sealPrefix) {
			plain = true
		}
		return v, nil
	}
	if json.Unmarshal(raw, o) != nil {
		return false
	}
	o.openSecrets(check)
	return plain
}

// KeyFile is where this store's platform key lives.
func (s *Store) KeyFile() string { return s.keys.path }

// RotateKey seals every secret with a new platform key and drops the old
// ones; it returns how many records were resealed.
func (s *Store) RotateKey() (int, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if _, err := s.keys.add(); err != nil {
		return 0, err
	}
	if err := s.keys.write(); err != nil {
		return 0, err
	}
	n, err := s.reseal(true)
	if err != nil {
		return n, fmt.Errorf("resealing with the new key (the old one is kept): %w", err)
	}
	s.keys.keepOnly()
	return n, s.keys.write()
}
