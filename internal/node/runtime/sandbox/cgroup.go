package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
)

var lookPath = exec.LookPath

// Limits of a gear.
type Limits struct {
	MemoryBytes int64
	Pids        int64
	CPUShares   uint64 // 1024 = one share
}

// SetLimits creates (if needed) the cgroup parent of a gear and writes its
// limits. Run again with other limits, it changes them live.
func SetLimits(parent string, l Limits) error {
	if cgroup.Mode() == "v2" {
		dir := filepath.Join(cgroup.Root, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// Controllers must be enabled on every ancestor for the leaf.
		for p := filepath.Dir(dir); strings.HasPrefix(p, cgroup.Root) && p != cgroup.Root; p = filepath.Dir(p) {
			os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644)
		}
		os.WriteFile(filepath.Join(cgroup.Root, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644)
		os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644)
		weight := 1 + (l.CPUShares-2)*9999/262142 // runc's shares -> weight
		return writeAll(dir, map[string]string{
			"memory.max":      strconv.FormatInt(l.MemoryBytes, 10),
			"memory.swap.max": "0",
			"pids.max":        strconv.FormatInt(l.Pids, 10),
			"cpu.weight":      strconv.FormatUint(weight, 10),
		})
	}
	for ctrl, files := range map[string]map[string]string{
		"pids": {"pids.max": strconv.FormatInt(l.Pids, 10)},
		"cpu":  {"cpu.shares": strconv.FormatUint(l.CPUShares, 10)},
	} {
		dir := filepath.Join(cgroup.Root, ctrl, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", ctrl, err)
		}
		if err := writeAll(dir, files); err != nil {
			return err
		}
	}
	// Memory: the limit may never exceed memory+swap, so raising writes
	// memsw first and lowering writes it last. Without swap accounting
	// memsw is absent.
	dir := filepath.Join(cgroup.Root, "memory", parent)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cgroup memory: %w", err)
	}
	mem := filepath.Join(dir, "memory.limit_in_bytes")
	memsw := filepath.Join(dir, "memory.memsw.limit_in_bytes")
	v := []byte(strconv.FormatInt(l.MemoryBytes, 10))
	order := []string{mem, memsw}
	if cur, err := os.ReadFile(memsw); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(cur)), 10, 64)
		if l.MemoryBytes > n {
			order = []string{memsw, mem}
		}
	} else {
		order = []string{mem}
	}
	for _, f := range order {
		if err := os.WriteFile(f, v, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", f, err)
		}
	}
	return nil
}

func writeAll(dir string, files map[string]string) error {
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			return fmt.Errorf("writing %s/%s: %w", dir, name, err)
		}
	}
	return nil
}

// RemoveCgroup removes a gear's cgroup parent (and runc's leftover leaf).
func RemoveCgroup(parent string) error {
	var dirs []string
	if cgroup.Mode() == "v2" {
		dirs = []string{filepath.Join(cgroup.Root, parent)}
	} else {
		entries, _ := os.ReadDir(cgroup.Root)
		for _, e := range entries {
			dirs = append(dirs, filepath.Join(cgroup.Root, e.Name(), parent))
		}
	}
	var errs []error
	for _, d := range dirs {
		os.Remove(filepath.Join(d, "proc"))
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
