package enforce

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"golang.org/x/sys/unix"
)

// A gear's network namespace removed between the check and nsenter (the
// gear stops while a deploy applies the policy), or unmounted with its
// file still there (nsenter: "reassociate to namespace 'ns/net' failed:
// Invalid argument"), or not mounted yet (a gear starting) is not an
// error; a namespace that stays and refuses the rules is.
func TestApplyInNetnsRace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a namespace needs root (CI runs as root)")
	}
	if err := os.MkdirAll(netplan.NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("gtest-race-%d", os.Getpid())
	path := netplan.NetnsPath(name)
	// mount makes path a namespace's mount (this process's own: the
	// stand-in for nsenter below never enters it).
	mount := func() {
		t.Helper()
		os.WriteFile(path, nil, 0o644)
		if err := unix.Mount("/proc/self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for unix.Unmount(path, unix.MNT_DETACH) == nil {
		}
		os.Remove(path)
	})
	bin := filepath.Join(t.TempDir(), "nsenter")
	old := nsenter
	t.Cleanup(func() { nsenter = old })
	nsenter = bin
	ran := filepath.Join(t.TempDir(), "ran")
	stub := func(script string) {
		os.Remove(ran)
		os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+ran+"\n"+script), 0o755)
	}

	// Removed meanwhile, as a stopping gear's is.
	mount()
	stub("umount -l " + path + " && rm -f " + path + "\necho \"nsenter: cannot open " + path + ": No such file or directory\" >&2\nexit 1\n")
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("a namespace removed meanwhile: %v", err)
	}
	// Unmounted meanwhile, its file still there.
	mount()
	stub("umount -l " + path + "\necho \"nsenter: reassociate to namespace 'ns/net' failed: Invalid argument\" >&2\nexit 1\n")
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("a namespace unmounted meanwhile: %v", err)
	}
	// A file not mounted (yet, or any more): nsenter is not run.
	stub("exit 1\n")
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("a file that is not a namespace: %v", err)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("nsenter ran on a file that is not a namespace")
	}
	// One that stays: the failure is reported.
	os.Remove(path)
	mount()
	stub("echo 'nft: syntax error' >&2\nexit 1\n")
	if err := applyInNetns(name, "flush ruleset\n"); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("a namespace that refuses the rules: %v", err)
	}
	// None at all: nothing to do.
	for unix.Unmount(path, unix.MNT_DETACH) == nil {
	}
	os.Remove(path)
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("no namespace: %v", err)
	}
}
