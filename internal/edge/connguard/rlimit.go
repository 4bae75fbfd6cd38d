package connguard

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// RaiseFileLimit lifts the process's open-file limit as far as it may go:
// the soft limit to the hard one, and as root the hard one to the kernel's
// ceiling (fs.nr_open, at most 1<<20), so that a flood of connections
// meets the per-source caps long before it meets the descriptor limit. It
// returns the limit now in force.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	want := lim.Max
	if os.Geteuid() == 0 {
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > want {
				want = min(n, 1<<20)
			}
		}
	}
	if want <= lim.Cur && want <= lim.Max {
		return lim.Cur, nil
	}
	next := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		next = syscall.Rlimit{Cur: lim.Max, Max: lim.Max} // not root: the soft limit only
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
			return lim.Cur, err
		}
	}
	return next.Cur, nil
}
