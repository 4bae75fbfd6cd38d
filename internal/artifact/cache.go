package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Cache is a directory of artifacts, each a file named by the SHA-256 of
// its bytes, written once and never changed.
type Cache struct{ Dir string }

const digestPrefix = "sha256:"

// ValidDigest says whether d names an artifact ("sha256:" and 64 hex).
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, digestPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// Path is where the artifact lives in the cache, and whether it is there.
func (c Cache) Path(digest string) (string, bool) {
	if !ValidDigest(digest) {
		return "", false
	}
	p := filepath.Join(c.Dir, strings.TrimPrefix(digest, digestPrefix)+".tar")
	_, err := os.Stat(p)
	return p, err == nil
}

// Put packs the tree at dir into the cache and returns its digest.
func (c Cache) Put(dir string) (string, error) {
	return c.write(func(w io.Writer) error { return Pack(w, dir) }, "")
}

// Fetch writes what r holds into the cache, and keeps it only if it is
// the artifact digest names.
func (c Cache) Fetch(digest string, r io.Reader) error {
	if !ValidDigest(digest) {
		return fmt.Errorf("%q is not an artifact's digest", digest)
	}
	_, err := c.write(func(w io.Writer) error { _, err := io.Copy(w, r); return err }, digest)
	return err
}

// write fills a temporary file while hashing it, then names it by its
// digest (refused when want is set and differs).
func (c Cache) write(fill func(io.Writer) error, want string) (string, error) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(c.Dir, ".incoming-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // once renamed, nothing
	h := sha256.New()
	err = fill(io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	digest := digestPrefix + hex.EncodeToString(h.Sum(nil))
	if want != "" && digest != want {
		return "", fmt.Errorf("the artifact received is %s, not the %s asked for: refused", digest, want)
	}
	p, _ := c.Path(digest)
	if err := os.Rename(f.Name(), p); err != nil {
		return "", err
	}
	return digest, nil
}

// Extract unpacks the artifact into dir (which must not exist).
func (c Cache) Extract(digest, dir string, chown bool) error {
	p, ok := c.Path(digest)
	if !ok {
		return fmt.Errorf("artifact %s is not in the cache", digest)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return Unpack(f, dir, chown)
}

// Keep removes every artifact but those named.
func (c Cache) Keep(digests map[string]bool) (removed int, err error) {
	entries, err := os.ReadDir(c.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".incoming-") || !strings.HasSuffix(name, ".tar") {
			continue
		}
		if !digests[digestPrefix+strings.TrimSuffix(name, ".tar")] {
			if os.Remove(filepath.Join(c.Dir, name)) == nil {
				removed++
			}
		}
	}
	return removed, nil
}
