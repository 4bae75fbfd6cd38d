package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A log drain to Debian's rsyslog in a network namespace receives the
// lines of web, worker, cron and the router with their names, and keeps
// working across an rsyslog restart: the lines of the outage arrive
// afterwards.
func TestLogDrains(t *testing.T) {
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatal("rsyslogd is not installed: run scripts/install-deps")
	}
	srv, u := namespacedUser(t, "--cron-minute", "2s", "--drain-retry", "100ms")
	hc := srv.httpClient()

	// rsyslog's own machine: a namespace with a veth to this one.
	ns := peerNamespace(t, "gdr", "172.31.88.1/30", "172.31.88.2/30")
	dir := t.TempDir()
	logFile := filepath.Join(dir, "drain.log")
	conf := filepath.Join(dir, "rsyslog.conf")
	writeFile(t, conf, `global(workDirectory="`+dir+`")
module(load="imtcp")
input(type="imtcp" port="1514" address="172.31.88.2")
template(name="line" type="string" string="%timereported:::date-rfc3339% %hostname% %app-name% %procid% %msgid% %msg%\n")
action(type="omfile" file="`+logFile+`" template="line")
`, 0o644)
	var rsyslog *exec.Cmd
	startRsyslog := func() {
		t.Helper()
		rsyslog = exec.Command("ip", "netns", "exec", ns, "rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslog.pid"))
		rsyslog.Stdout, rsyslog.Stderr = os.Stderr, os.Stderr
		if err := rsyslog.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "rsyslog listens", 10*time.Second, func() error {
			c, err := net.DialTimeout("tcp", "172.31.88.2:1514", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	stopRsyslog := func() {
		rsyslog.Process.Signal(syscall.SIGTERM)
		rsyslog.Wait()
	}
	startRsyslog()
	t.Cleanup(func() { rsyslog.Process.Kill(); rsyslog.Wait() })

	// An app with web, a worker and a cron job.
	var a appJSON
	u.gantryJSON(&a, "app", "create", "logs")
	work := t.TempDir()
	u.runIn(work, "git", "clone", "-q", a.GitURL, "logs")
	repo := filepath.Join(work, "logs")
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v1"), 0o644)
	writeFile(t, filepath.Join(repo, "Procfile"), "web: node server.js\nworker: while true; do echo worker-beat $(date +%s.%N); sleep 0.3; done\n", 0o644)
	writeFile(t, filepath.Join(repo, "app.json"), `{"cron": [{"command": "echo cron-beat", "schedule": "* * * * *"}]}`, 0o644)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v1")
	u.runIn(repo, "git", "push", "-q")

	// Bad drains: clear messages, nothing added.
	for url, want := range map[string]string{
		"ftp://172.31.88.2/x":           `unknown drain scheme "ftp"`,
		"syslog://172.31.88.2:1515":     "cannot be reached",
		"syslog://127.0.0.1:1514":       "may not reach 127.0.0.1",
		"syslog+tls://172.31.88.2:1514": "TLS handshake",
	} {
		if out := u.gantryFails("drain", "add", "logs", url); !strings.Contains(out, want) {
			t.Errorf("drain add %s: %s; want %q", url, out, want)
		}
	}
	if out := u.gantry("drain", "list", "logs"); !strings.Contains(out, "has no drains") {
		t.Errorf("drains after refused adds: %s", out)
	}
	u.gantry("drain", "add", "logs", "syslog://172.31.88.2:1514")
	type drainRow struct {
		ID, State     string
		Sent, Dropped int
	}
	eventually(t, "the drain is connected", 10*time.Second, func() error {
		var ds []drainRow
		u.gantryJSON(&ds, "drain", "list", "logs")
		if len(ds) != 1 || ds[0].State != "connected" {
			return fmt.Errorf("drains: %+v", ds)
		}
		return nil
	})

	// A web gear's start, a request (the router's access line), the
	// worker and the cron job reach rsyslog, each named.
	u.gantry("app", "restart", "logs")
	mustGet(t, hc, srv.url("logs-acme.localhost", "/"))
	read := func() string {
		b, _ := os.ReadFile(logFile)
		return string(b)
	}
	eventually(t, "lines of web, worker, cron and router in rsyslog", 60*time.Second, func() error {
		got := read()
		for _, want := range []string{
			" acme/logs web.", "listening on 8080",
			" acme/logs worker.", "worker-beat",
			" acme/logs cron.", "cron-beat",
			" acme/logs router access ", "app=acme/logs",
		} {
			if !strings.Contains(got, want) {
				return fmt.Errorf("no %q in what rsyslog wrote:\n%s", want, tail(got, 20))
			}
		}
		return nil
	})

	// rsyslog restarts; what the worker said meanwhile arrives after.
	stopRsyslog()
	down := time.Now()
	time.Sleep(2 * time.Second)
	up := time.Now()
	startRsyslog()
	eventually(t, "the worker's lines of the outage after the restart", 60*time.Second, func() error {
		sc := bufio.NewScanner(strings.NewReader(read()))
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 6 || !strings.Contains(sc.Text(), "worker-beat") {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, f[0])
			if err == nil && at.After(down.Add(200*time.Millisecond)) && at.Before(up) {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d worker lines from the outage (%s to %s)", n, down.Format(time.RFC3339Nano), up.Format(time.RFC3339Nano))
		}
		return nil
	})
	var ds []drainRow
	u.gantryJSON(&ds, "drain", "list", "logs")
	if len(ds) != 1 || ds[0].State != "connected" || ds[0].Sent == 0 || ds[0].Dropped != 0 {
		t.Errorf("drain list: %+v", ds)
	}
	u.gantry("drain", "remove", "logs", ds[0].ID)
	if out := u.gantry("drain", "list", "logs"); !strings.Contains(out, "has no drains") {
		t.Errorf("drains after remove: %s", out)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
