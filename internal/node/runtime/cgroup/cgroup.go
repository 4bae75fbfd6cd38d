// Package cgroup reads what the kernel keeps of a gear's cgroup: how this
// host's cgroups work, the gear's memory limit, its OOM kills and its
// use. sandbox writes the limits.
//
// The shim links this package: it imports only standard packages whose
// initialisation comes early (not path/filepath; see node/helpers).
package cgroup

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// Root is where cgroup hierarchies are mounted.
var Root = "/sys/fs/cgroup"

// Path joins Root and the elements, as filepath.Join would for them.
func Path(elem ...string) string {
	p := strings.TrimRight(Root, "/")
	for _, e := range elem {
		if e = strings.Trim(e, "/"); e != "" {
			p += "/" + e
		}
	}
	return p
}

// Mode tells how this host's cgroups work: "v2" (unified) or "v1"
// (legacy or hybrid: the v1 controllers do the work).
func Mode() string {
	if _, err := os.Stat(Path("cgroup.controllers")); err == nil {
		return "v2"
	}
	return "v1"
}

// OOMKills counts the processes the kernel killed in the gear for
// exceeding its memory limit. v1 charges a kill to the victim's own
// cgroup, runc's leaf ("proc"), which exists until the container is
// deleted (runc run --keep); v2's memory.events is hierarchical.
func OOMKills(parent string) int {
	if Mode() == "v2" {
		return counter(Path(parent, "memory.events"), "oom_kill")
	}
	return counter(Path("memory", parent, "memory.oom_control"), "oom_kill") +
		counter(Path("memory", parent, "proc", "memory.oom_control"), "oom_kill")
}

// Usage is what the gear's processes use now: memory (bytes charged to
// its cgroup) and CPU time since it started. ok is false where the gear
// has no cgroup of its own (plain processes).
func Usage(parent string) (memory int64, cpu time.Duration, ok bool) {
	if parent == "" {
		return 0, 0, false
	}
	if Mode() == "v2" {
		memory, ok = number(Path(parent, "memory.current"))
		if !ok {
			return 0, 0, false
		}
		return memory, time.Duration(counter(Path(parent, "cpu.stat"), "usage_usec")) * time.Microsecond, true
	}
	memory, ok = number(Path("memory", parent, "memory.usage_in_bytes"))
	if !ok {
		return 0, 0, false
	}
	ns, _ := number(Path("cpuacct", parent, "cpuacct.usage"))
	return memory, time.Duration(ns), true
}

// MemoryLimit is the gear's memory limit in bytes as the kernel has it.
func MemoryLimit(parent string) int64 {
	path := Path("memory", parent, "memory.limit_in_bytes")
	if Mode() == "v2" {
		path = Path(parent, "memory.max")
	}
	n, _ := number(path)
	return n
}

// number reads a file that holds one number.
func number(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, true
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
