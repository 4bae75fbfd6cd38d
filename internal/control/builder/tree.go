package builder

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tree reads a pushed checkout without ever leaving it: every path is
// resolved beneath the checkout's root (os.Root, openat2 RESOLVE_BENEATH
// on Linux), so a symlink in a push that points at /etc/shadow, /proc or
// another app's files is refused, not followed, however it is spelt.
// The builder runs as root: nothing it reads from a push may go through
// anything but a tree.
type tree struct {
	root *os.Root
	dir  string
}

// maxTreeFile bounds what the server reads of one file of a checkout
// (Procfile, package.json, app.json, requirements.txt).
const maxTreeFile = 1 << 20

func openTree(dir string) (*tree, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the checkout: %w", err)
	}
	return &tree{root: r, dir: dir}, nil
}

func (t *tree) Close() error { return t.root.Close() }

// readFile reads name (slash-separated, relative to the checkout). A link
// out of the checkout is an error that names the file, never its target's
// content.
func (t *tree) readFile(name string) ([]byte, error) {
	f, err := t.root.Open(name)
	if err != nil {
		return nil, t.explain(name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTreeFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxTreeFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxTreeFile)
	}
	return data, nil
}

// stat is os.Stat beneath the checkout.
func (t *tree) stat(name string) (fs.FileInfo, error) {
	fi, err := t.root.Stat(name)
	if err != nil {
		return nil, t.explain(name, err)
	}
	return fi, nil
}

// exists says whether name is in the checkout (links followed only within
// it).
func (t *tree) exists(name string) bool {
	_, err := t.root.Stat(name)
	return err == nil
}

// present says whether name is in the checkout, and is an error when it
// is a link that leads out of it.
func (t *tree) present(name string) (bool, error) {
	if _, err := t.root.Lstat(name); err != nil {
		return false, nil
	}
	if _, err := t.stat(name); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // a dangling link inside: as if absent
		}
		return false, err
	}
	return true, nil
}

// readDir lists a directory of the checkout.
func (t *tree) readDir(name string) ([]fs.DirEntry, error) {
	f, err := t.root.Open(name)
	if err != nil {
		return nil, t.explain(name, err)
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// abs is the host path of name in the checkout.
func (t *tree) abs(name string) string { return filepath.Join(t.dir, filepath.FromSlash(name)) }

// errOutside says a path of the push leads out of the checkout.
var errOutside = errors.New("is a link that leads out of the repository: only links to files inside it are followed")

// explain turns an escape into a message about the push; other errors
// keep their cause (not found stays fs.ErrNotExist).
func (t *tree) explain(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Resolved on the host only to word the message; nothing is read.
	if real, rerr := filepath.EvalSymlinks(t.abs(name)); rerr != nil || !within(t.dir, real) {
		return fmt.Errorf("%s %w", name, errOutside)
	}
	return fmt.Errorf("%s: %w", name, err)
}

func within(dir, path string) bool {
	dir, _ = filepath.EvalSymlinks(dir)
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
