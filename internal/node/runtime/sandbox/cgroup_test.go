package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
)

// The cgroup v2 path (Debian 12's and Ubuntu's default) cannot run on
// these machines (hybrid hierarchy): it is tested against a fake cgroupfs
// tree, the files a v2 kernel offers.
func TestCgroupV2OnAFakeTree(t *testing.T) {
	root := t.TempDir()
	old := cgroup.Root
	cgroup.Root = root
	t.Cleanup(func() { cgroup.Root = old })
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory hugetlb pids rdma misc\n"), 0o644)
	if cgroup.Mode() != "v2" {
		t.Fatalf("mode %q; want v2", cgroup.Mode())
	}
	read := func(rel string) string {
		b, _ := os.ReadFile(filepath.Join(root, rel))
		return strings.TrimSpace(string(b))
	}
	if err := SetLimits("gantry/g1", Limits{MemoryBytes: 512 << 20, Pids: 250, CPUShares: 1024}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"gantry/g1/memory.max":      "536870912",
		"gantry/g1/memory.swap.max": "0",
		"gantry/g1/pids.max":        "250",
		"gantry/g1/cpu.weight":      "39", // runc's conversion of 1024 shares
		// Controllers delegated down to the gear (its processes live in
		// runc's leaf below it).
		"cgroup.subtree_control":           "+memory +pids +cpu",
		"gantry/cgroup.subtree_control":    "+memory +pids +cpu",
		"gantry/g1/cgroup.subtree_control": "+memory +pids +cpu",
	} {
		if got := read(file); got != want {
			t.Errorf("%s = %q; want %q", file, got, want)
		}
	}
	// Live resize: the same call with other limits.
	if err := SetLimits("gantry/g1", Limits{MemoryBytes: 1 << 30, Pids: 500, CPUShares: 2048}); err != nil {
		t.Fatal(err)
	}
	if read("gantry/g1/memory.max") != "1073741824" || read("gantry/g1/pids.max") != "500" || cgroup.MemoryLimit("gantry/g1") != 1<<30 {
		t.Errorf("after a resize: memory.max %s, pids.max %s", read("gantry/g1/memory.max"), read("gantry/g1/pids.max"))
	}
	// OOM kills are read from memory.events (hierarchical in v2).
	os.WriteFile(filepath.Join(root, "gantry/g1/memory.events"), []byte("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"), 0o644)
	if n := cgroup.OOMKills("gantry/g1"); n != 2 {
		t.Errorf("OOMKills = %d; want 2 (oom_kill of memory.events)", n)
	}
	// Removal: the gear's cgroup goes (a fake tree holds files; the kernel's
	// directories hold none that rmdir minds).
	for _, f := range []string{"memory.max", "memory.swap.max", "pids.max", "cpu.weight", "cgroup.subtree_control", "memory.events"} {
		os.Remove(filepath.Join(root, "gantry/g1", f))
	}
	if err := RemoveCgroup("gantry/g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "gantry/g1")); err == nil {
		t.Error("the gear's cgroup is still there")
	}
}
