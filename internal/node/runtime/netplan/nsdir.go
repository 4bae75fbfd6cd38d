package netplan

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where Gantry keeps its gears' named network namespaces: a
// directory of its own that is a private mount point. Not /run/netns:
// the first `ip netns add` by anyone bind-mounts /run/netns onto itself
// recursively and shared, which copies every namespace mount below it, and
// those copies make Gantry's namespaces impossible to delete ("device or
// resource busy"). A private mount point of our own is neither copied nor
// propagated.
const NetnsDir = "/run/gantry/netns"

// legacyNetnsDir is where namespaces were kept before; ensureNetnsDir
// moves Gantry's own from there so that running gears keep theirs.
const legacyNetnsDir = "/run/netns"

// NetnsPath is the file of a named namespace of Gantry's.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// ensureNetnsDir makes NetnsDir a private mount point (once) and moves the
// prefix's namespaces that an older Gantry left in /run/netns.
func ensureNetnsDir(prefix string) error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	if !isMountPoint(NetnsDir) {
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting %s: %w", NetnsDir, err)
		}
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making %s private: %w", NetnsDir, err)
	}
	entries, _ := os.ReadDir(legacyNetnsDir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		old, cur := filepath.Join(legacyNetnsDir, e.Name()), NetnsPath(e.Name())
		if _, err := os.Stat(cur); err != nil {
			if f, err := os.OpenFile(cur, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444); err == nil {
				f.Close()
				if err := unix.Mount(old, cur, "none", unix.MS_BIND, ""); err != nil {
					os.Remove(cur)
					continue
				}
			}
		}
		for unix.Unmount(old, unix.MNT_DETACH) == nil { // every copy
		}
		os.Remove(old)
	}
	return nil
}

// isMountPoint says whether dir is the mount point of a mount of this
// namespace.
func isMountPoint(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// newNamedNetns creates a named netns in NetnsDir without leaving this
// thread in it.
func newNamedNetns(prefix, name string) error {
	if err := ensureNetnsDir(prefix); err != nil {
		return err
	}
	path := NetnsPath(name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		os.Remove(path)
		return err
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		os.Remove(path)
		return fmt.Errorf("unshare: %w", err)
	}
	err = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
	if serr := netns.Set(orig); serr != nil {
		// This thread is in the new namespace: never give it back to Go.
		runtime.Goexit()
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("bind-mounting %s: %w", path, err)
	}
	return nil
}

// deleteNamedNetns unmounts (every copy) and removes a named netns.
func deleteNamedNetns(name string) error {
	path := NetnsPath(name)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return os.ErrNotExist
	}
	for unix.Unmount(path, unix.MNT_DETACH) == nil {
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing netns %s: %w", name, err)
	}
	return nil
}

func netnsFromName(name string) (netns.NsHandle, error) { return netns.GetFromPath(NetnsPath(name)) }
