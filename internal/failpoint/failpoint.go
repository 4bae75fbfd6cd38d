// Package failpoint lets the tests kill the server at a named point of a
// change (kill -9 as bad luck would), to check that what it leaves is
// whole: GANTRY_FAILPOINT=NAME in the server's environment makes Hit(NAME)
// kill the process with SIGKILL. Without it, Hit does nothing.
package failpoint

import (
	"os"
	"strings"
	"syscall"
)

var armed = os.Getenv("GANTRY_FAILPOINT")

// Hit kills the process if the failpoint name is armed.
func Hit(name string) {
	if armed == "" {
		return
	}
	for _, n := range strings.Split(armed, ",") {
		if n == name {
			os.Stderr.WriteString("failpoint " + name + ": killing the server\n")
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}
