// Package artifact is what a build leaves for the machines that run it:
// the built tree packed as a tar (Pack, Unpack: nothing unpacked leaves
// its directory), kept under its SHA-256 in a cache of immutable files
// (Cache), so a machine fetching it checks what it got, and any machine
// that holds it can hand it on.
package artifact

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Pack writes the tree at dir (regular files, directories, symlinks
// as links) with modes and owners.
func Pack(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil // sockets, devices: not part of a build
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Unpack unpacks r into dir, which must not exist yet. Entries may not
// leave dir: no absolute names, no "..", nothing written beneath a link
// the archive made.
func Unpack(r io.Reader, dir string, chown bool) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	links := map[string]bool{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("refusing %q: outside the tree", h.Name)
		}
		for p := filepath.Dir(name); p != "."; p = filepath.Dir(p) {
			if links[p] {
				return fmt.Errorf("refusing %q: beneath a link", h.Name)
			}
		}
		p := filepath.Join(dir, name)
		mode := fs.FileMode(h.Mode) & 0o7777
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			os.Chmod(p, mode)
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
			links[name] = true
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
			os.Chmod(p, mode)
		default:
			continue
		}
		if chown {
			os.Lchown(p, h.Uid, h.Gid)
		}
	}
}
