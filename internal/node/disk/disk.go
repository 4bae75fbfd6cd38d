// Package disk bounds what an app may store: each app's directory (its
// repository, deployments, data, cache, logs) is a filesystem of its own,
// an ext4 image file loop-mounted there, sized by the app's gear size. A
// gear or a build that fills it gets ENOSPC; nothing else on the host does.
// Images are sparse, so an app pays only for what it writes.
//
// It must not decide sizes (the agent does) nor touch what runs.
package disk

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Images manages the apps' filesystem images in Dir.
type Images struct {
	Dir string // where the image files live (outside the apps' directories)
}

// Available says why images cannot be used here (nil: they can).
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("disk limits need root (loop devices, mounts)")
	}
	for _, c := range []string{"mkfs.ext4", "mount", "umount", "resize2fs"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("disk limits need %s (e2fsprogs, util-linux): run scripts/install-deps", c)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return errors.New("disk limits need loop devices (/dev/loop-control is missing)")
	}
	return nil
}

// ErrNotEmpty says an app's directory already holds files that an image
// mounted over it would hide (an app created before disk limits).
var ErrNotEmpty = errors.New("the app's directory was created without a disk limit")

func (i *Images) image(appID string) string { return filepath.Join(i.Dir, appID+".img") }

// Has says whether the app has an image.
func (i *Images) Has(appID string) bool {
	_, err := os.Stat(i.image(appID))
	return err == nil
}

// Ensure gives the app a filesystem of size bytes mounted at dir: made
// (sparse) if missing, mounted if not (after a reboot), grown if smaller.
func (i *Images) Ensure(appID, dir string, size int64) error {
	img := i.image(appID)
	if err := os.MkdirAll(i.Dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if entries, _ := os.ReadDir(dir); len(entries) > 0 && !Mounted(dir) {
			return ErrNotEmpty
		}
		if err := makeImage(img, size); err != nil {
			return err
		}
	}
	if !Mounted(dir) {
		if err := growOffline(img, size); err != nil {
			return err
		}
		if out, err := exec.Command("mount", "-o", "loop,nosuid,nodev", img, dir).CombinedOutput(); err != nil {
			return fmt.Errorf("mounting the app's disk: %v: %s", err, strings.TrimSpace(string(out)))
		}
		os.Remove(filepath.Join(dir, "lost+found"))
	}
	return i.Grow(appID, dir, size)
}

// growOffline grows an unmounted image to size (a grow that could not be
// done online, or a larger size set while the app's disk was not mounted).
func growOffline(img string, size int64) error {
	fi, err := os.Stat(img)
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := os.Truncate(img, size); err != nil {
			return err
		}
	}
	out, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		return nil // not readable: the mount will say what is wrong
	}
	var blocks, bsize int64
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			bsize, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	fi, _ = os.Stat(img)
	if blocks*bsize >= fi.Size() || blocks == 0 {
		return nil
	}
	exec.Command("e2fsck", "-f", "-p", img).Run()
	if out, err := exec.Command("resize2fs", img).CombinedOutput(); err != nil {
		return fmt.Errorf("growing the app's disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ErrGrowLater says the image file is larger already but the mounted
// filesystem may not grow online here (no CAP_SYS_RESOURCE): it grows at
// its next mount.
var ErrGrowLater = errors.New("the app's disk grows when it is next mounted (online resizing is not permitted on this host)")

func makeImage(img string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		os.Remove(img)
		return err
	}
	// Lazy init keeps the image sparse and mkfs fast; a small journal.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-J", "size=4", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", img).CombinedOutput()
	if err != nil {
		os.Remove(img)
		return fmt.Errorf("making the app's disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Grow makes the app's filesystem size bytes if it is smaller (online;
// ext4 does not shrink while mounted, so a smaller size waits).
func (i *Images) Grow(appID, dir string, size int64) error {
	img := i.image(appID)
	fi, err := os.Stat(img)
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	dev, err := mountSource(dir) // the loop device
	if err != nil {
		return err
	}
	// The loop device learns the file's new size, then the filesystem.
	if out, err := exec.Command("losetup", "-c", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("growing the app's disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("resize2fs", dev).CombinedOutput(); err != nil {
		if strings.Contains(string(out), "Permission denied") {
			return ErrGrowLater
		}
		return fmt.Errorf("growing the app's disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Remove unmounts the app's filesystem and deletes its image and the
// mount point.
func (i *Images) Remove(appID, dir string) error {
	for Mounted(dir) {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting the app's disk: %w", err)
		}
	}
	os.Remove(dir)
	if err := os.Remove(i.image(appID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Usage is what the filesystem at dir has used and can hold, in bytes.
func Usage(dir string) (used, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	total = int64(st.Blocks) * st.Bsize
	return total - int64(st.Bfree)*st.Bsize, total, nil
}

// Mounted says whether dir is a mount point.
func Mounted(dir string) bool {
	// A mount point's device differs from its parent's: two stats, where
	// reading /proc/self/mountinfo (hundreds of lines with an app disk
	// each) took most of an apps list's time.
	var in, up syscall.Stat_t
	dir = filepath.Clean(dir)
	if syscall.Stat(dir, &in) != nil || syscall.Stat(filepath.Dir(dir), &up) != nil {
		return false
	}
	return in.Dev != up.Dev
}

// mountSource is the device mounted at dir (from /proc/self/mountinfo).
func mountSource(dir string) (string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	src := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || unescape(fields[4]) != dir {
			continue
		}
		for k, x := range fields {
			if x == "-" && k+2 < len(fields) {
				src = fields[k+2] // the last mount there wins
			}
		}
	}
	if src == "" {
		return "", fmt.Errorf("%s is not a mount point", dir)
	}
	return src, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
