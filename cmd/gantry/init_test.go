package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// Every gear runs this binary two or three times before the app (the
// shim, gear-init, static-serve), and so does every CLI command: package
// initialisation must stay cheap. GODEBUG=inittrace=1 reports what each
// package's init allocated; a package that does real work at init (a
// password hash made at init once cost every process 37 ms and 19 MiB)
// shows as a large allocation.
func TestPackageInitIsCheap(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	line := regexp.MustCompile(`(?m)^init (\S+) @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs`)
	ms := line.FindAllSubmatch(out, -1)
	if len(ms) < 50 {
		t.Fatalf("only %d init lines in:\n%s", len(ms), out)
	}
	var total int64
	for _, m := range ms {
		b, _ := strconv.ParseInt(string(m[2]), 10, 64)
		total += b
		if b > 1<<20 {
			t.Errorf("package %s allocates %d KiB at init: make it on first use", m[1], b>>10)
		}
	}
	if total > 8<<20 {
		t.Errorf("package initialisation allocates %d KiB in all", total>>10)
	}
	t.Logf("%d packages allocate %d KiB at init", len(ms), total>>10)
}
