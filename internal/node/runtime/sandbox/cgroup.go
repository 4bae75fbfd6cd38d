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
	"time"
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
		"pids": {"pids.max": strconv.FormatInt(l.Pids, 10)},
		"cpu":  {"cpu.shares": strconv.FormatUint(l.CPUShares, 10)},
	} {
		dir := filepath.Join(CgroupRoot, ctrl, parent)
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
	dir := filepath.Join(CgroupRoot, "memory", parent)
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

// OOMKills counts the processes the kernel killed in the gear for
// exceeding its memory limit. v1 charges a kill to the victim's own
// cgroup, runc's leaf ("proc"), which exists until the container is
// deleted (runc run --keep); v2's memory.events is hierarchical.
func OOMKills(parent string) int {
	if CgroupMode() == "v2" {
		return counter(filepath.Join(CgroupRoot, parent, "memory.events"), "oom_kill")
	}
	dir := filepath.Join(CgroupRoot, "memory", parent)
	return counter(filepath.Join(dir, "memory.oom_control"), "oom_kill") +
		counter(filepath.Join(dir, "proc", "memory.oom_control"), "oom_kill")
}

// Usage is what the gear's processes use now: memory (bytes charged to
// its cgroup) and CPU time since it started. ok is false where the gear
// has no cgroup of its own (plain processes).
func Usage(parent string) (memory int64, cpu time.Duration, ok bool) {
	if parent == "" {
		return 0, 0, false
	}
	if CgroupMode() == "v2" {
		dir := filepath.Join(CgroupRoot, parent)
		b, err := os.ReadFile(filepath.Join(dir, "memory.current"))
		if err != nil {
			return 0, 0, false
		}
		memory, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return memory, time.Duration(counter(filepath.Join(dir, "cpu.stat"), "usage_usec")) * time.Microsecond, true
	}
	b, err := os.ReadFile(filepath.Join(CgroupRoot, "memory", parent, "memory.usage_in_bytes"))
	if err != nil {
		return 0, 0, false
	}
	memory, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if c, err := os.ReadFile(filepath.Join(CgroupRoot, "cpuacct", parent, "cpuacct.usage")); err == nil {
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(c)), 10, 64)
		cpu = time.Duration(ns)
	}
	return memory, cpu, true
}

func counter(path, key string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == key {
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

// MemoryLimit is the gear's memory limit in bytes as the kernel has it.
func MemoryLimit(parent string) int64 {
	path := filepath.Join(CgroupRoot, "memory", parent, "memory.limit_in_bytes")
	if CgroupMode() == "v2" {
		path = filepath.Join(CgroupRoot, parent, "memory.max")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}
