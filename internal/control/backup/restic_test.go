package backup

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A repository made once with a root-only key; a backup listed by its tag
// and restored as it was; check passes, and fails on a corrupt pack.
func TestRepo(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is not installed: run scripts/install-deps")
	}
	dir := t.TempDir()
	r := Repo{Location: filepath.Join(dir, "repo"), KeyFile: filepath.Join(dir, "backup.key")}
	ctx := context.Background()
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Init(ctx); err != nil {
		t.Fatalf("a second init: %v", err)
	}
	if fi, err := os.Stat(r.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", fi, err)
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "skip"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello"), 0o640)
	os.WriteFile(filepath.Join(src, "skip", "b.txt"), []byte("no"), 0o640)
	s, err := r.Backup(ctx, []string{"app:x"}, []string{src}, []string{filepath.Join(src, "skip")})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ID) != 64 || s.Added == 0 {
		t.Errorf("snapshot %+v", s)
	}
	list, err := r.Snapshots(ctx, "app:x")
	if err != nil || len(list) != 1 || list[0].ID != s.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	if other, _ := r.Snapshots(ctx, "app:y"); len(other) != 0 {
		t.Errorf("another tag lists %+v", other)
	}
	target := filepath.Join(dir, "out")
	if err := r.Restore(ctx, s.ID, target); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, src, "a.txt")); string(b) != "hello" {
		t.Errorf("restored %q", b)
	}
	if _, err := os.Stat(filepath.Join(target, src, "skip", "b.txt")); !os.IsNotExist(err) {
		t.Errorf("an excluded file was saved: %v", err)
	}
	var out bytes.Buffer
	if err := r.Check(ctx, &out); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	packs, _ := filepath.Glob(filepath.Join(r.Location, "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack file")
	}
	f, _ := os.OpenFile(packs[0], os.O_WRONLY, 0)
	f.WriteAt([]byte("corrupt!"), 10)
	f.Close()
	if err := r.Check(ctx, &out); err == nil {
		t.Error("check passed with a corrupt pack")
	}
}
