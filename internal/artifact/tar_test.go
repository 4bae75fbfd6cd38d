package artifact

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A hostile archive cannot write outside the tree.
func TestExtractRefusesEscapes(t *testing.T) {
	for name, entries := range map[string][]tar.Header{
		"dotdot":       {{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"absolute":     {{Name: "/tmp/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"through link": {{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, {Name: "l/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			tw.WriteHeader(&h)
		}
		tw.Close()
		if err := Unpack(&buf, filepath.Join(t.TempDir(), "d"), false); err == nil {
			t.Errorf("%s: extracted", name)
		}
	}
}

// A tree goes into the cache under its digest, comes out the same, and a
// fetch of other bytes than the digest names is refused.
func TestCache(t *testing.T) {
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "bin", "run"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Symlink("bin/run", filepath.Join(tree, "start"))
	c := Cache{Dir: filepath.Join(t.TempDir(), "artifacts")}
	d, err := c.Put(tree)
	if err != nil || !ValidDigest(d) {
		t.Fatalf("put: %q %v", d, err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := c.Extract(d, out, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "start")); string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("extracted %q", b)
	}
	if fi, err := os.Stat(filepath.Join(out, "bin", "run")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode: %v %v", fi, err)
	}
	// Another machine's cache takes it only as it is.
	p, _ := c.Path(d)
	raw, _ := os.ReadFile(p)
	other := Cache{Dir: filepath.Join(t.TempDir(), "other")}
	if err := other.Fetch(d, bytes.NewReader(append(raw[:len(raw)-1:len(raw)-1], 'x'))); err == nil {
		t.Error("a changed artifact was taken")
	}
	if _, ok := other.Path(d); ok {
		t.Error("the refused artifact stayed in the cache")
	}
	if err := other.Fetch(d, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Path(d); !ok {
		t.Error("the fetched artifact is not in the cache")
	}
	if _, ok := c.Path("sha256:../../etc/passwd"); ok || ValidDigest("sha256:../x") {
		t.Error("a path as a digest")
	}
	if n, err := other.Keep(map[string]bool{}); n != 1 || err != nil {
		t.Errorf("keep nothing: removed %d %v", n, err)
	}
}
