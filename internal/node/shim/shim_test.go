package shim

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the shim: with GANTRY_TEST_SHIM set it runs
// Main on that directory.
func TestMain(m *testing.M) {
	if dir := os.Getenv("GANTRY_TEST_SHIM"); dir != "" {
		os.Exit(Main(dir))
	}
	os.Exit(m.Run())
}

func startShim(t *testing.T, command string, opts ...func(*Spec)) (dir string, cmd *exec.Cmd) {
	t.Helper()
	dir = t.TempDir()
	spec := Spec{GearID: "g", Command: command, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"},
		LogFile: filepath.Join(dir, "g.log"), StopGrace: 2 * time.Second}
	for _, o := range opts {
		o(&spec)
	}
	data, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, SpecFile), data, 0o600)
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GANTRY_TEST_SHIM="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return dir, cmd
}

func waitState(t *testing.T, dir string, ok func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := ReadState(dir); err == nil && ok(st) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := ReadState(dir)
	t.Fatalf("state never reached; last %+v", st)
	return st
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	dir, _ := startShim(t, "echo started; exit 3")
	st := waitState(t, dir, func(s State) bool { return s.Restarts >= 3 })
	if st.LastExit != "exited with status 3" {
		t.Errorf("last exit: %q", st.LastExit)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "g.log"))
	if strings.Count(string(log), "stdout started") < 3 || !strings.Contains(string(log), "restarting in") {
		t.Errorf("log:\n%s", log)
	}
	// Back-off doubles: the third restart waits longer than the first.
	if !strings.Contains(string(log), "restarting in 500ms") || !strings.Contains(string(log), "restarting in 1s") {
		t.Errorf("no doubling back-off in log:\n%s", log)
	}
}

// A one-off command (Once) runs one time: its exit is recorded, the shim
// stops, nothing restarts.
func TestOnceRunsOneTime(t *testing.T) {
	dir, cmd := startShim(t, "echo ran; exit 3", func(s *Spec) { s.Once = true })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the shim of a one-off did not stop")
	}
	st, err := ReadState(dir)
	if err != nil || st.Status != Stopped || st.Restarts != 0 || st.LastExit != "exited with status 3" {
		t.Errorf("state %+v %v", st, err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "g.log"))
	if strings.Count(string(log), "stdout ran") != 1 || !strings.Contains(string(log), "one-off command exited with status 3") {
		t.Errorf("log:\n%s", log)
	}
}

func TestStopKillsTheProcessGroup(t *testing.T) {
	// The child ignores SIGTERM and leaves a grandchild: both must go.
	dir, cmd := startShim(t, "trap '' TERM; sleep 300 & echo $! > child.pid; wait")
	st := waitState(t, dir, func(s State) bool { return s.Status == Running })
	if !Alive(dir, st) {
		t.Fatalf("shim not alive per Alive: %+v", st)
	}
	var grandchild int
	deadline := time.Now().Add(5 * time.Second)
	for grandchild == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "child.pid"))
		grandchild = atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("shim exit: %v", err)
	}
	st, _ = ReadState(dir)
	if st.Status != Stopped {
		t.Errorf("status after stop: %q", st.Status)
	}
	if grandchild == 0 {
		t.Fatal("the child did not report its grandchild")
	}
	// Dead means gone or a zombie awaiting init.
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, state, err := procStart(grandchild); err != nil || state == 'Z' {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("grandchild %d survived the stop", grandchild)
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// A process that leaves the group (setsid, as database workers do) is
// killed when the gear's process exits, and the shim itself lives on to
// restart it.
func TestEscapedDescendantsAreKilledAndShimSurvives(t *testing.T) {
	dir, cmd := startShim(t, "setsid sleep 300 & echo $! > escaped.pid; sleep 0.3; exit 1")
	var escaped int
	deadline := time.Now().Add(5 * time.Second)
	for escaped == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "escaped.pid"))
		escaped = atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if escaped == 0 {
		t.Fatal("no escaped process recorded")
	}
	waitState(t, dir, func(s State) bool { return s.Restarts >= 1 })
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, state, err := procStart(escaped); err != nil || state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("escaped process %d survived its gear's exit", escaped)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the shim died: %v", err)
	}
	waitState(t, dir, func(s State) bool { return s.Restarts >= 2 }) // still supervising
}
