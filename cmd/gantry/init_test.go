package main

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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

// The helpers the server starts for every gear (its supervisor, its PID 1)
// run before the binary's heavy packages initialise — etcd's server, gRPC,
// Prometheus, QUIC: each would add to every gear's start and memory. They
// also import no package whose path sorts late (net, path/filepath and so
// os/exec, x/sys/unix): Go initialises the ready package that sorts first,
// so such a dependency makes the helper wait for a hundred other packages'
// inits (4-5 ms per helper, two per namespaced gear's start).
func TestHelpersRunBeforeTheServersInit(t *testing.T) {
	if os.Getenv("GANTRY_HELPER_TEST") != "" {
		return // a child whose helper did not run: the test binary's main ran the tests instead
	}
	heavy := []string{"go.etcd.io/etcd/server/v3/etcdserver", "google.golang.org/grpc", "github.com/prometheus/client_golang/prometheus", "github.com/quic-go/quic-go"}
	trace := func(args ...string) string {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1", "GANTRY_HELPER_TEST=1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) { // (the shim refuses a missing directory)
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	all := trace("-test.run=^$")
	for _, p := range heavy { // the list names packages this binary has
		if !strings.Contains(all, "init "+p+" ") {
			t.Fatalf("%s is not initialised by the whole binary: update the list", p)
		}
	}
	late := []string{"net", "path/filepath", "golang.org/x/sys/unix", "github.com/vishvananda/netlink"}
	for _, p := range late {
		if !strings.Contains(all, "init "+p+" ") {
			t.Fatalf("%s is not initialised by the whole binary: update the list", p)
		}
	}
	inits := func(out string) int { return strings.Count(out, "\ninit ") }
	for _, args := range [][]string{{"gear-init", "--", "/bin/true"}, {"shim", "/nonexistent"}} {
		out := trace(args...)
		for _, p := range heavy {
			if strings.Contains(out, "init "+p+" ") {
				t.Errorf("gantry %s initialised %s first", args[0], p)
			}
		}
		for _, p := range late {
			if strings.Contains(out, "init "+p+" ") {
				t.Errorf("gantry %s waited for %s's init: the helpers must not import it (write it with syscall, strings, os)", args[0], p)
			}
		}
		if n := inits(out); n > inits(all)/3 {
			t.Errorf("gantry %s ran after %d of the binary's %d package inits; want at most a third", args[0], n, inits(all))
		} else {
			t.Logf("gantry %s ran after %d of the binary's %d package inits", args[0], n, inits(all))
		}
	}
}
