// Package sandbox runs a gear's process (or a build step) in isolation with
// the system's runc: its own PID, mount, IPC and UTS namespaces, the gear's
// network namespace, its own Unix user, no capabilities, no new privileges,
// a seccomp profile that refuses the dangerous system calls, and the host's
// programs mounted read-only. It writes OCI bundles and drives runc; it
// does not create network namespaces (package netplan does) or decide
// limits (the agent does).
package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Mount is a bind mount of a host path at the same path inside.
type Mount struct {
	Path     string
	ReadOnly bool
}

// Spec describes one sandboxed process.
type Spec struct {
	ID       string
	Args     []string
	Env      []string
	Cwd      string
	UID, GID uint32
	Hostname string
	// NetnsPath is the network namespace to join ("" for a new, empty one).
	NetnsPath string
	Mounts    []Mount
	// ResolvConf, if set, is the host file the gear sees as
	// /etc/resolv.conf (the platform's DNS forwarder on the gateway).
	ResolvConf string
	// CgroupParent is the cgroup (relative to the hierarchy root) under
	// which runc creates the process's own; limits are set on the parent.
	CgroupParent string
	TmpSize      string // size of /tmp, e.g. "256m"
	// Rootfs, when set, is the gear's own root (an image's filesystem, an
	// overlay the caller mounted): no program of the host is mounted, and
	// the process runs in a user namespace where ImageUID, the image's own
	// user (0 for most), is UID on the host and no other user exists.
	Rootfs   string
	ImageUID uint32
}

// blockedSyscalls are refused with EPERM: mounting, kernel modules, kexec,
// namespaces, keyrings, bpf and perf, clock and swap changes, reboot.
var blockedSyscalls = []string{
	"mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick",
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"unshare", "setns", "bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key", "acct", "quotactl", "syslog", "lookup_dcookie",
	"swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
	"open_by_handle_at", "name_to_handle_at", "vhangup", "iopl", "ioperm", "create_module",
	"get_kernel_syms", "query_module", "nfsservctl", "uselib", "personality",
}

// OCI returns the runtime spec for s. It is a pure function.
func OCI(s Spec) *specs.Spec {
	ro := func(p string) specs.Mount {
		return specs.Mount{Destination: p, Type: "bind", Source: p, Options: []string{"rbind", "ro", "nosuid", "nodev"}}
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
	}
	if s.Rootfs == "" {
		// (In a user namespace sysfs cannot be mounted for a network
		// namespace it does not own: an image's gear has no /sys.)
		mounts = append(mounts, specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}})
	}
	mounts = append(mounts,
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=" + orDefault(s.TmpSize, "256m")}},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=16m"}})
	if s.Rootfs == "" {
		mounts = append(mounts, ro("/usr"), ro("/etc"))
	}
	if s.ResolvConf != "" {
		mounts = append(mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: s.ResolvConf, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/opt"} {
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() && s.Rootfs == "" {
			mounts = append(mounts, ro(d)) // not merged-/usr: bind it
		}
	}
	for _, m := range s.Mounts {
		opts := []string{"rbind", "nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		mounts = append(mounts, specs.Mount{Destination: m.Path, Type: "bind", Source: m.Path, Options: opts})
	}
	ns := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: s.NetnsPath}}
	seccomp := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM},
		Syscalls:      []specs.LinuxSyscall{{Names: blockedSyscalls, Action: specs.ActErrno, ErrnoRet: ptr(uint(1))}},
	}
	user, root := specs.User{UID: s.UID, GID: s.GID, AdditionalGids: []uint32{s.GID}}, &specs.Root{Path: "rootfs", Readonly: true}
	var uidMap, gidMap []specs.LinuxIDMapping
	if s.Rootfs != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace})
		uidMap = []specs.LinuxIDMapping{{ContainerID: s.ImageUID, HostID: s.UID, Size: 1}}
		gidMap = []specs.LinuxIDMapping{{ContainerID: s.ImageUID, HostID: s.GID, Size: 1}}
		user = specs.User{UID: s.ImageUID, GID: s.ImageUID}
		root = &specs.Root{Path: s.Rootfs}
	}
	return &specs.Spec{
		Version: "1.0.2", // runc 1.1 refuses newer
		Process: &specs.Process{
			User:            user,
			Args:            s.Args,
			Env:             s.Env,
			Cwd:             orDefault(s.Cwd, "/"),
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
		},
		Root:     root,
		Hostname: s.Hostname,
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces:  ns,
			UIDMappings: uidMap,
			GIDMappings: gidMap,
			CgroupsPath: filepath.Join("/", s.CgroupParent, "proc"),
			Seccomp:     seccomp,
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// WriteBundle writes an OCI bundle for s into dir: config.json and an
// empty rootfs with the merged-/usr symlinks.
func WriteBundle(dir string, s Spec) error {
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "lib32"} {
		if s.Rootfs != "" {
			break // the image's own
		}
		if target, err := os.Readlink("/" + d); err == nil {
			link := filepath.Join(rootfs, d)
			os.Remove(link)
			if err := os.Symlink(target, link); err != nil {
				return err
			}
		}
	}
	data, err := json.MarshalIndent(OCI(s), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// Available reports whether namespaced gears can run here, and if not why.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not running as root")
	}
	for _, c := range []string{"runc", "nft"} {
		if _, err := lookPath(c); err != nil {
			return fmt.Errorf("%s is not installed (scripts/install-deps installs it)", c)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("network namespaces are not available")
	}
	return nil
}

// MountOverlay mounts an image's root filesystem (lower, read-only and
// shared by the deployment's gears) under dir/merged with a writable
// layer of the gear's own (dir/upper, owned by uid), as a container's root
// is. It returns the merged directory.
func MountOverlay(lower, dir string, uid int) (string, error) {
	merged := filepath.Join(dir, "merged")
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	UnmountOverlay(dir) // a mount left by a killed server
	for _, d := range []string{merged, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Chown(upper, uid, uid); err != nil {
		return "", err
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return "", fmt.Errorf("mounting the image's filesystem: %w", err)
	}
	return merged, nil
}

// UnmountOverlay unmounts a gear's image filesystem (dir as given to
// MountOverlay) and removes its writable layer.
func UnmountOverlay(dir string) {
	merged := filepath.Join(dir, "merged")
	unix.Unmount(merged, unix.MNT_DETACH)
	os.RemoveAll(filepath.Join(dir, "upper"))
	os.RemoveAll(filepath.Join(dir, "work"))
	os.Remove(merged)
}
