package disk

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// An app's disk: made and mounted, bounded, grown (online where the host
// permits it, else at the next mount), removed.
func TestImageLifecycle(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("%v (CI runs as root with loop devices)", err)
	}
	root := t.TempDir()
	imgs := &Images{Dir: filepath.Join(root, "disks")}
	dir := filepath.Join(root, "apps", "a1")
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := imgs.Ensure("a1", dir, 64<<20); err != nil {
		t.Fatal(err)
	}
	if !Mounted(dir) {
		t.Fatal("not mounted")
	}
	_, total, _ := Usage(dir)
	if total < 50<<20 || total > 64<<20 {
		t.Fatalf("a 64 MiB disk holds %d bytes", total)
	}
	// Bounded: a write past it fails, and only there.
	f, _ := os.Create(filepath.Join(dir, "fill"))
	_, err := f.Write(make([]byte, 80<<20))
	f.Close()
	if err == nil {
		t.Fatal("wrote 80 MiB on a 64 MiB disk")
	}
	os.Remove(filepath.Join(dir, "fill"))
	// A larger size: at once, or at the next mount.
	if err := imgs.Grow("a1", dir, 128<<20); err != nil && err != ErrGrowLater {
		t.Fatal(err)
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := imgs.Ensure("a1", dir, 128<<20); err != nil {
		t.Fatal(err)
	}
	if _, total, _ = Usage(dir); total < 110<<20 {
		t.Fatalf("after growing to 128 MiB and a remount: %d bytes", total)
	}
	// A directory with files is not hidden under a new disk.
	other := filepath.Join(root, "apps", "old")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "x"), []byte("x"), 0o644)
	if err := imgs.Ensure("old", other, 64<<20); err != ErrNotEmpty {
		t.Fatalf("mounting over files: %v; want ErrNotEmpty", err)
	}
	if err := imgs.Remove("a1", dir); err != nil {
		t.Fatal(err)
	}
	if Mounted(dir) || imgs.Has("a1") {
		t.Fatal("still mounted or image left after Remove")
	}
}
