package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// Several servers on one host (tests, a simulated cluster) get user ids
// and cgroups of their own, from their net prefix.
func TestServersOnOneHostDoNotShare(t *testing.T) {
	lo, hi := UIDRange("gantry")
	if lo != 200000 || hi != 265535 {
		t.Errorf("default range %d-%d; want 200000-265535", lo, hi)
	}
	seen := map[int]string{lo: "gantry"}
	for _, p := range []string{"ge1234", "gbe42", "gt99", "node2", "node3"} {
		l, h := UIDRange(p)
		if h-l != 65535 || l < 265536 || h > 1<<31-1 {
			t.Errorf("%s: range %d-%d", p, l, h)
		}
		if other, ok := seen[l]; ok {
			t.Errorf("%s and %s share uids from %d", p, other, l)
		}
		seen[l] = p
	}
	a := &Agent{o: Options{Network: netplan.Plan{Prefix: "node2"}}}
	b := &Agent{}
	if a.cgroupParent("g1") != "node2/g1" || b.cgroupParent("g1") != "gantry/g1" {
		t.Errorf("cgroup parents %q, %q", a.cgroupParent("g1"), b.cgroupParent("g1"))
	}
}

// cleanLogs removes gone gears' logs beyond the newest keep, never a live
// gear's, however old.
func TestCleanLogsKeepsLiveGears(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for i, name := range []string{"db.log", "job1.cron.log", "old1.log", "old2.worker.log", "old3.log", "new.log"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x\n"), 0o600)
		mt := now.Add(time.Duration(i-10) * time.Minute) // db.log the oldest
		os.Chtimes(p, mt, mt)
	}
	cleanLogs(dir, 2, map[string]bool{"db": true, "new": true})
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if want := []string{"db.log", "job1.cron.log", "new.log", "old2.worker.log", "old3.log"}; !slices.Equal(got, want) {
		t.Errorf("left %v; want %v", got, want)
	}
}
