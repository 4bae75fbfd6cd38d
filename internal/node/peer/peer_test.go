package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/artifact"
	"github.com/gantry-paas/gantry/internal/edge/pki"
)

type fakeLocal struct {
	deps      string
	echo      string // an echo service's address
	artifacts artifact.Cache
}

func (f *fakeLocal) ArtifactPath(d string) (string, bool) { return f.artifacts.Path(d) }

func (f *fakeLocal) GearServices(id string) ([]byte, error) {
	return []byte(`[{"name":"web","port":1}]`), nil
}
func (f *fakeLocal) DialGear(id, target string) (net.Conn, error) {
	if target != "svc" {
		return nil, errors.New("not a service of the gear")
	}
	return net.Dial("tcp", f.echo)
}

func (f *fakeLocal) ExecGear(id, command string, tty bool, term string) (*exec.Cmd, error) {
	if id != "g1" {
		return nil, errors.New("gear " + id + " does not run on this machine")
	}
	return exec.Command("/bin/sh", "-c", command), nil
}

func (f *fakeLocal) StartGear(_ context.Context, id string, out io.Writer) error {
	fmt.Fprintln(out, "-----> starting", id)
	if id == "bad" {
		return errors.New("gear bad: exited 1\nline two")
	}
	return nil
}
func (f *fakeLocal) StopGear(context.Context, string) error { return nil }
func (f *fakeLocal) GearState(id string) (State, error) {
	return State{PID: 42, Status: "running"}, nil
}
func (f *fakeLocal) LogDir(app string) string { return filepath.Join(f.deps, app, "logs") }
func (f *fakeLocal) DeploymentDir(app, dep string) (string, bool) {
	p := filepath.Join(f.deps, app, dep)
	_, err := os.Stat(p)
	return p, err == nil
}

// Two machines: a start streams its output and outcome, a deployment's
// tree arrives whole (modes, links), and a caller without a cluster
// certificate gets nothing.
func TestPeers(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Open(dir, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := pki.OpenCluster(dir)
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := cl.NodeCert("m1", net.ParseIP("127.0.0.1"))
	m2, _ := cl.NodeCert("m2", net.ParseIP("127.0.0.1"))
	deps := t.TempDir()
	tree := filepath.Join(deps, "app1", "dep1")
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "bin", "run"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(tree, "server.js"), []byte("x"), 0o644)
	os.Symlink("server.js", filepath.Join(tree, "index.js"))

	echo, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	local := &fakeLocal{deps: deps, echo: echo.Addr().String(), artifacts: artifact.Cache{Dir: filepath.Join(t.TempDir(), "artifacts")}}
	srv, err := NewServer("127.0.0.1:0", cl.ServerTLS(m1), local, nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	addr := srv.Addr().String()
	c := NewClient(cl.ClientTLS(m2), "")

	var out bytes.Buffer
	if err := c.StartGear(ctx, addr, "g1", &out); err != nil || !strings.Contains(out.String(), "starting g1") {
		t.Errorf("start: %v, output %q", err, out.String())
	}
	if err := c.StartGear(ctx, addr, "bad", io.Discard); err == nil || err.Error() != "gear bad: exited 1\nline two" {
		t.Errorf("a failed start: %v", err)
	}
	if st, err := c.GearState(ctx, addr, "g1"); err != nil || st.PID != 42 {
		t.Errorf("state %+v %v", st, err)
	}
	dest := filepath.Join(t.TempDir(), "dep1")
	if err := c.FetchDeployment(ctx, addr, "app1", "dep1", dest, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "bin", "run")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/run: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dest, "index.js")); err != nil || l != "server.js" {
		t.Errorf("link: %q %v", l, err)
	}
	if err := c.FetchDeployment(ctx, addr, "app1", "nope", filepath.Join(t.TempDir(), "x"), false); err == nil {
		t.Error("a deployment the machine does not have")
	}
	// A packed build by its digest, into this machine's cache.
	digest, err := local.artifacts.Put(tree)
	if err != nil {
		t.Fatal(err)
	}
	mine := artifact.Cache{Dir: filepath.Join(t.TempDir(), "mine")}
	if err := c.FetchArtifact(ctx, addr, digest, mine); err != nil {
		t.Fatal(err)
	}
	if _, ok := mine.Path(digest); !ok {
		t.Error("the fetched build is not in the cache")
	}
	other := "sha256:" + strings.Repeat("0", 64)
	if err := c.FetchArtifact(ctx, addr, other, mine); err == nil || !strings.Contains(err.Error(), "does not have") {
		t.Errorf("a build the machine does not have: %v", err)
	}

	// A service of a gear, through the cluster port: bytes both ways.
	conn, err := c.DialGear(ctx, addr, "g1", "svc")
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Errorf("through the dial: %q %v", buf, err)
	}
	conn.Close()
	if _, err := c.DialGear(ctx, addr, "g1", "10.0.0.1:22"); err == nil || !strings.Contains(err.Error(), "not a service") {
		t.Errorf("a dial to something else: %v", err)
	}
	// A command in the gear: streams, stdin, exit code; in a terminal,
	// its size and a window change.
	var stdout, stderr bytes.Buffer
	code, err := c.ExecGear(ctx, addr, "g1", ExecRequest{Command: "echo out; echo err >&2; read x; echo got $x; exit 3"},
		ExecIO{Stdin: strings.NewReader("hello\n"), Stdout: &stdout, Stderr: &stderr})
	if err != nil || code != 3 || stdout.String() != "out\ngot hello\n" || stderr.String() != "err\n" {
		t.Errorf("exec: code %d %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	sizes := make(chan [2]int, 1)
	pr, pw := io.Pipe() // stdin stays open while the command runs
	defer pw.Close()
	go func() { time.Sleep(300 * time.Millisecond); sizes <- [2]int{120, 40} }()
	code, err = c.ExecGear(ctx, addr, "g1", ExecRequest{Command: "stty size; tty; sleep 1; stty size", TTY: true, Cols: 100, Rows: 30},
		ExecIO{Stdin: pr, Stdout: &stdout, Resize: sizes})
	if out := stdout.String(); err != nil || code != 0 || !strings.Contains(out, "30 100") || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "40 120") {
		t.Errorf("exec in a terminal: code %d %v, output %q", code, err, out)
	}
	if _, err := c.ExecGear(ctx, addr, "g2", ExecRequest{Command: "true"}, ExecIO{Stdout: io.Discard}); err == nil || !strings.Contains(err.Error(), "does not run") {
		t.Errorf("exec in a gear of another machine: %v", err)
	}
	if raw, err := c.GearServices(ctx, addr, "g1"); err != nil || !strings.Contains(string(raw), "web") {
		t.Errorf("services: %s %v", raw, err)
	}

	// A client with an app certificate of the same root is refused.
	appCert, _ := ca.Certificate("blog.example.test")
	bad := NewClient(cl.ClientTLS(appCert), "")
	if err := bad.StartGear(ctx, addr, "g1", io.Discard); err == nil {
		t.Error("a caller without a cluster certificate started a gear")
	}
}
