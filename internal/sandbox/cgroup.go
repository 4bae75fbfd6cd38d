package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

var lookPath = exec.LookPath

// Limits of a gear.
type Limits struct {
	MemoryBytes int64
	Pids        int64
	CPUShares   uint64 // 1024 = one share
}

// CgroupRoot is where cgroup hierarchies are mounted.
var CgroupRoot = "/sys/fs/cgroup"

// CgroupMode tells how this host's cgroups work: "v2" (unified) or "v1"
// (legacy or hybrid: the v1 controllers do the work).
func CgroupMode() string {
	if _, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.controllers")); err == nil {
		return "v2"
	}
	return "v1"
}

// SetLimits creates (if needed) the cgroup parent of a gear and writes its
// limits. Run again with other limits, it changes them live.
func SetLimits(parent string, l Limits) error {
	if CgroupMode() == "v2" {
		dir := filepath.Join(CgroupRoot, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// Controllers must be enabled on every ancestor for the leaf.
		for p := filepath.Dir(dir); strings.HasPrefix(p, CgroupRoot) && p != CgroupRoot; p = filepath.Dir(p) {
			os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644)
		}
		os.WriteFile(filepath.Join(CgroupRoot, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644)
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
		"memory": {"memory.limit_in_bytes": strconv.FormatInt(l.MemoryBytes, 10)},
		"pids":   {"pids.max": strconv.FormatInt(l.Pids, 10)},
		"cpu":    {"cpu.shares": strconv.FormatUint(l.CPUShares, 10)},
	} {
		dir := filepath.Join(CgroupRoot, ctrl, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", ctrl, err)
		}
		if err := writeAll(dir, files); err != nil {
			return err
		}
	}
	// Without swap accounting memsw may be absent; where present, no swap.
	memsw := filepath.Join(CgroupRoot, "memory", parent, "memory.memsw.limit_in_bytes")
	if _, err := os.Stat(memsw); err == nil {
		os.WriteFile(memsw, []byte(strconv.FormatInt(l.MemoryBytes, 10)), 0o644)
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

// OOMKills is how many processes the kernel killed in the gear's cgroup
// for exceeding its memory limit.
func OOMKills(parent string) int {
	path := filepath.Join(CgroupRoot, "memory", parent, "memory.oom_control")
	if CgroupMode() == "v2" {
		path = filepath.Join(CgroupRoot, parent, "memory.events")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == "oom_kill" {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// RemoveCgroup removes a gear's cgroup parent (and runc's leftover leaf).
func RemoveCgroup(parent string) error {
	var dirs []string
	if CgroupMode() == "v2" {
		dirs = []string{filepath.Join(CgroupRoot, parent)}
	} else {
		entries, _ := os.ReadDir(CgroupRoot)
		for _, e := range entries {
			dirs = append(dirs, filepath.Join(CgroupRoot, e.Name(), parent))
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

// CgroupExists reports whether any hierarchy still holds the parent.
func CgroupExists(parent string) bool {
	if CgroupMode() == "v2" {
		_, err := os.Stat(filepath.Join(CgroupRoot, parent))
		return err == nil
	}
	entries, _ := os.ReadDir(CgroupRoot)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(CgroupRoot, e.Name(), parent)); err == nil {
			return true
		}
	}
	return false
}
