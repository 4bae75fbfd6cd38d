package gearinit

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The gear's command is found on its PATH (Go in /usr/local/go/bin, the
// app's own bin directories), then in the usual places.
func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "mytool")
	os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	if p, err := LookPath("mytool"); err != nil || p != tool {
		t.Fatalf("LookPath(mytool) = %q, %v; want %q", p, err, tool)
	}
	if p, err := LookPath("sh"); err != nil || !filepath.IsAbs(p) {
		t.Fatalf("LookPath(sh) = %q, %v", p, err)
	}
	if p, _ := LookPath("./.gantry/bin/web"); p != "./.gantry/bin/web" {
		t.Fatalf("a relative path with a slash: %q", p)
	}
	if _, err := LookPath("no-such-tool-here"); err == nil {
		t.Fatal("found a tool that does not exist")
	}

	// The shim finds runc with it too: the first executable regular file
	// on PATH; a directory or a file without the execute bit is passed
	// over.
	a, b := t.TempDir(), t.TempDir()
	os.Mkdir(filepath.Join(a, "tool"), 0o755)                             // a directory
	os.WriteFile(filepath.Join(b, "other"), []byte("#!/bin/sh\n"), 0o644) // not executable
	os.WriteFile(filepath.Join(b, "tool"), []byte("#!/bin/sh\n"), 0o755)  // the one
	t.Setenv("PATH", a+":"+b)
	if p, err := LookPath("tool"); err != nil || p != filepath.Join(b, "tool") {
		t.Errorf("LookPath(tool) = %q, %v; want %s", p, err, filepath.Join(b, "tool"))
	}
	if _, err := LookPath("other"); err == nil || !strings.Contains(err.Error(), "not found in PATH") {
		t.Errorf("a file without the execute bit was taken: %v", err)
	}
	if p, err := LookPath("./bin/x"); err != nil || p != "./bin/x" {
		t.Errorf("a path with a slash: %q, %v", p, err)
	}
	t.Setenv("PATH", "")
	if p, err := LookPath("sh"); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("without PATH, sh in the usual places: %q, %v", p, err)
	}
}

// With --wait-addr the command waits until the namespace has the gear's
// address (the agent gives it last, after the gear's rules and policy),
// and not a moment longer; without it, it gives up with a message.
func TestWaitAddr(t *testing.T) {
	if a := os.Getenv("GEARINIT_WAIT"); a != "" { // the child, in a namespace of its own
		timeout, _ := time.ParseDuration(os.Getenv("GEARINIT_TIMEOUT"))
		ip, ok := parseIPv4(a)
		if !ok {
			t.Fatalf("parseIPv4(%q) failed", a)
		}
		if err := waitAddr(ip, timeout); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("up")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace of its own (unshare --net)")
	}
	type result struct {
		out string
		err error
	}
	child := func(timeout string) (*exec.Cmd, chan result) {
		// As in a gear: the app's user, no capabilities.
		cmd := exec.Command("unshare", "--net", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", os.Args[0], "-test.run=^TestWaitAddr$")
		cmd.Env = append(os.Environ(), "GEARINIT_WAIT=10.99.0.1", "GEARINIT_TIMEOUT="+timeout)
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan result, 1)
		go func() {
			b, _ := io.ReadAll(pipe)
			done <- result{strings.TrimSpace(string(b)), cmd.Wait()}
		}()
		return cmd, done
	}
	cmd, done := child("30s")
	defer cmd.Process.Kill()
	// Until its namespace is its own, the address would go to the host's.
	self, _ := os.Readlink("/proc/self/ns/net")
	for {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if ns != self {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("went on before its address was there: %q %v", r.out, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if b, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", cmd.Process.Pid), "ip", "addr", "add", "10.99.0.1/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("adding the address: %v %s", err, b)
	}
	if r := <-done; r.err != nil || r.out != "up" {
		t.Fatalf("after the address: %v %q", r.err, r.out)
	}
	_, done = child("200ms")
	if r := <-done; r.err == nil || !strings.Contains(r.out, "did not come up") {
		t.Fatalf("without the address: %v %q", r.err, r.out)
	}
}

func TestParseIPv4(t *testing.T) {
	for s, want := range map[string]string{
		"10.99.0.1": "10.99.0.1", "0.0.0.0": "0.0.0.0", "255.255.255.255": "255.255.255.255",
		"10.99.0": "", "10.99.0.256": "", "10.99.0.01": "", "10.99..1": "", "10.99.0.+1": "", "::1": "", "a.b.c.d": "", "10.99.0.1.": "",
	} {
		a, ok := parseIPv4(s)
		if got := ""; ok {
			got = formatIPv4(a)
			if got != want {
				t.Errorf("parseIPv4(%q) = %s; want %q", s, got, want)
			}
		} else if want != "" {
			t.Errorf("parseIPv4(%q) failed; want %s", s, want)
		}
	}
}
