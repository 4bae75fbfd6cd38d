// Package cores keeps a benchmark's processes on the cores it names, every
// thread of them. sched_setaffinity(2) on a pid moves that one thread: a Go
// program's other threads, and the programs they start, would run on any
// core, beside the process measured.
package cores

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Pin moves every thread of process pid to cpu; threads it starts later
// inherit that. It lists the threads again until none is left elsewhere
// (one may start while the others are moved).
func Pin(pid, cpu int) error {
	var want unix.CPUSet
	want.Set(cpu)
	for range 10 {
		tids, err := threads(pid)
		if err != nil {
			return err
		}
		moved := false
		for _, tid := range tids {
			var have unix.CPUSet
			if unix.SchedGetaffinity(tid, &have) == nil && have == want {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &want); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pinning thread %d of %d to core %d: %w", tid, pid, cpu, err)
			}
			moved = true
		}
		if !moved {
			return nil
		}
	}
	return fmt.Errorf("process %d keeps starting threads faster than they can be pinned", pid)
}

func threads(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
