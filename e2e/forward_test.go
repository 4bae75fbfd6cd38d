package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

type forwardJSON struct {
	Service string `json:"service"`
	Local   string `json:"local"`
	Remote  string `json:"remote"`
}

// portForward starts `gantry port-forward APP --json` and returns what it
// forwards; the process stops at the end of the test.
func portForward(t *testing.T, u *env, app string, extra ...string) ([]forwardJSON, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(gantryBin, append([]string{"port-forward", app, "--json"}, extra...)...)
	cmd.Env = u.environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var fwd []forwardJSON
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&fwd); err != nil {
		t.Fatalf("port-forward output: %v\n%s", err, stderr.String())
	}
	return fwd, cmd
}

func testPortForward(t *testing.T, u *env, app, wantBody string, extra ...string) {
	fwd, cmd := portForward(t, u, app, extra...)
	var web, halfClose *forwardJSON
	for i := range fwd {
		switch {
		case fwd[i].Service == "web":
			web = &fwd[i]
		case strings.HasPrefix(fwd[i].Service, "tcp-"):
			halfClose = &fwd[i]
		}
		if !strings.HasPrefix(fwd[i].Local, "127.0.0.1:") {
			t.Errorf("forward %+v does not listen on 127.0.0.1", fwd[i])
		}
	}
	if web == nil || halfClose == nil {
		t.Fatalf("forwards: %+v; want web and the tcp service", fwd)
	}
	// The web process through the tunnel, 20 connections at once.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + web.Local + "/")
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != wantBody {
				errs <- fmt.Errorf("got %q", b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("web through port-forward: %v", err)
	}
	// Half-close: 1 MiB up, shut down the write side, the reply still comes.
	c, err := net.Dial("tcp", halfClose.Local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	if string(reply) != "got 1048576\n" {
		t.Errorf("half-closed connection got %q; want the reply after EOF", reply)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("port-forward after Ctrl-C: %v", err)
	}
}

// sshClient connects to the SSH endpoint with a user's key, as any SSH
// client could (no gantry CLI in the way).
func sshClient(t *testing.T, u *env, addr string) *ssh.Client {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.home, ".ssh", "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.ParsePrivateKey(b)
	hk, err := knownhosts.New(filepath.Join(u.home, ".ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	// known_hosts names the server as gantry's URLs do: localhost.
	addr = strings.Replace(addr, "127.0.0.1:", "localhost:", 1)
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "git", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func refusedForward(t *testing.T, c *ssh.Client, addr string) {
	t.Helper()
	conn, err := c.Dial("tcp", addr)
	if err == nil {
		conn.Close()
		t.Errorf("forward to %s was allowed", addr)
		return
	}
	if !strings.Contains(err.Error(), "prohibited") && !strings.Contains(err.Error(), "gantry:") {
		t.Errorf("forward to %s: %v; want a clear refusal", addr, err)
	}
}
