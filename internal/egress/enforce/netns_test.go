package enforce

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// A gear's network namespace removed between the check and nsenter (the
// gear stops while a deploy applies the policy) is not an error; a
// namespace that stays and refuses the rules is.
func TestApplyInNetnsRace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the namespaces' directory is root's (CI runs as root)")
	}
	if err := os.MkdirAll(netplan.NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("gtest-race-%d", os.Getpid())
	path := netplan.NetnsPath(name)
	t.Cleanup(func() { os.Remove(path) })
	// A stand-in for nsenter: it removes the namespace (as a stopping
	// gear does), then fails as nsenter does on a missing one.
	bin := filepath.Join(t.TempDir(), "nsenter")
	os.WriteFile(bin, []byte("#!/bin/sh\nrm -f "+path+"\necho \"nsenter: cannot open "+path+": No such file or directory\" >&2\nexit 1\n"), 0o755)
	old := nsenter
	t.Cleanup(func() { nsenter = old })
	nsenter = bin

	os.WriteFile(path, nil, 0o644)
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("a namespace removed meanwhile: %v", err)
	}
	// One that stays: the failure is reported.
	os.WriteFile(bin, []byte("#!/bin/sh\necho 'nft: syntax error' >&2\nexit 1\n"), 0o755)
	os.WriteFile(path, nil, 0o644)
	if err := applyInNetns(name, "flush ruleset\n"); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("a namespace that refuses the rules: %v", err)
	}
	// None at all: nothing to do.
	os.Remove(path)
	if err := applyInNetns(name, "flush ruleset\n"); err != nil {
		t.Errorf("no namespace: %v", err)
	}
}
