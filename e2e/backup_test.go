package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Backups against bad luck and other machines: an SFTP target served by
// OpenSSH in a network namespace (unreachable, key not yet authorized,
// then used), deduplication over ten snapshots, a kill -9 of the server
// in the middle of a save and of a restore.
func TestBackupFaults(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the SFTP server runs in a network namespace of its own, which needs root (CI runs as root)")
	}
	for _, bin := range []string{"restic", "/usr/sbin/sshd"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps", bin)
		}
	}
	root := t.TempDir()
	os.Chmod(root, 0o711)
	os.Chmod(filepath.Dir(root), 0o711)
	data, cfg := filepath.Join(root, "data"), filepath.Join(root, "admin.json")
	t.Cleanup(func() { killGears(data) })
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.log.String())
		}
	})
	u := newEnv(t, cfg)
	_, repo := deployNodeApp(t, u, "bk", "web")
	host := "web-bk.localhost"
	inData := func(script string) string {
		t.Helper()
		return strings.TrimSpace(u.gantry("run", "web", "--", "sh", "-c", "'cd \"$GANTRY_DATA_DIR\" && "+script+"'"))
	}

	// An SFTP target: OpenSSH's sshd in a namespace, root's key file in
	// the test's directory, the repository at an absolute path.
	ns := peerNamespace(t, "gbk", "172.31.90.1/30", "172.31.90.2/30")
	sftpDir := t.TempDir()
	u.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(sftpDir, "hostkey"))
	authorized := filepath.Join(sftpDir, "authorized_keys")
	writeFile(t, authorized, "", 0o600)
	writeFile(t, filepath.Join(sftpDir, "sshd_config"), strings.Join([]string{
		"ListenAddress 172.31.90.2", "Port 22", "HostKey " + filepath.Join(sftpDir, "hostkey"), "PidFile none",
		"AuthorizedKeysFile " + authorized, "PermitRootLogin prohibit-password", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", ""}, "\n"), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	sshd := exec.Command("ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(sftpDir, "sshd_config"))
	var sshdLog strings.Builder
	sshd.Stderr = &sshdLog
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sshd.Process.Kill()
		sshd.Wait()
		if t.Failed() {
			t.Log("sshd:\n" + sshdLog.String())
		}
	})
	var tgt struct {
		Location  string `json:"location"`
		PublicKey string `json:"public_key"`
	}
	u.gantryJSON(&tgt, "admin", "backup", "target")
	if !strings.HasPrefix(tgt.PublicKey, "ssh-ed25519 ") {
		t.Fatalf("backup target: %+v", tgt)
	}
	sftpRepo := filepath.Join(sftpDir, "repo")
	loc := "sftp://root@172.31.90.2/" + sftpRepo
	if out := u.gantryFails("admin", "backup", "target", "set", "sftp://root@172.31.90.2:1/"+sftpRepo); !strings.Contains(out, "cannot be reached") {
		t.Errorf("an unreachable SFTP target: %s", out)
	}
	eventually(t, "sshd listening", 10*time.Second, func() error {
		out := u.gantryFails("admin", "backup", "target", "set", loc)
		if !strings.Contains(out, "refused the platform's SSH key") || !strings.Contains(out, tgt.PublicKey) {
			return fmt.Errorf("a target that refuses the key: %s", out)
		}
		return nil
	})
	writeFile(t, authorized, tgt.PublicKey+"\n", 0o600)
	u.gantry("admin", "backup", "target", "set", loc)
	inData("echo sftp > note.txt")
	var s0 struct {
		ID string `json:"id"`
	}
	u.gantryJSON(&s0, "snapshot", "save", "web")
	if _, err := os.Stat(filepath.Join(sftpRepo, "config")); err != nil {
		t.Fatalf("the SFTP target holds no repository: %v", err)
	}
	inData("echo changed > note.txt")
	u.gantry("snapshot", "restore", "web", s0.ID[:8])
	if got := inData("cat note.txt"); got != "sftp" {
		t.Errorf("restored from SFTP: %q", got)
	}
	if out := u.gantry("admin", "backup", "check"); !strings.Contains(out, "is whole") {
		t.Errorf("check of the SFTP target:\n%s", out)
	}

	// Deduplication: ten snapshots of a 200 MiB data directory (200 files
	// of 1 MiB) of which 1% changes between them.
	local := filepath.Join(root, "backups")
	u.gantry("admin", "backup", "target", "set", local)
	inData("for i in $(seq 200); do head -c 1048576 /dev/urandom > f$i; done")
	var sizes []int64
	start := time.Now()
	for i := 0; i < 10; i++ {
		if i > 0 {
			inData(fmt.Sprintf("head -c 1048576 /dev/urandom > f%d; head -c 1048576 /dev/urandom > f%d", 2*i, 2*i+1))
		}
		u.gantry("snapshot", "save", "web")
		sizes = append(sizes, dirSize(t, local))
	}
	full := int64(200 << 20)
	growth := sizes[9] - sizes[0]
	t.Logf("dedup: first snapshot %.1f MiB, nine more with 1%% changed each add %.1f MiB (%.1f%% of nine full copies); repository %.1f MiB for ten snapshots = %.1f%% of ten full copies; %s for ten saves",
		mib(sizes[0]), mib(growth), 100*float64(growth)/float64(9*full), mib(sizes[9]), 100*float64(sizes[9])/float64(10*full), time.Since(start).Round(100*time.Millisecond))
	if sizes[9] > 10*full/5 || growth > 9*full/20 {
		t.Errorf("ten snapshots take %d bytes (growth %d): not deduplicated", sizes[9], growth)
	}
	var list []struct {
		ID string `json:"id"`
	}
	u.gantryJSON(&list, "snapshot", "list", "web")
	last := list[0].ID
	wantNote := inData("cat f5 | md5sum")

	// kill -9 in the middle of a save: restic dies with the server; every
	// earlier snapshot still restores, and the next save goes through
	// (the lock the killed restic left is removed).
	inData("head -c 314572800 /dev/urandom > big")
	save := exec.Command(gantryBin, "snapshot", "save", "web")
	save.Env = u.environ()
	if err := save.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restic backing up", 20*time.Second, func() error {
		if exec.Command("pgrep", "-f", "restic --repo "+local+" .*backup").Run() != nil {
			return fmt.Errorf("no restic backup running")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.exited
	save.Wait()
	eventually(t, "restic gone with the server", 10*time.Second, func() error {
		if exec.Command("pgrep", "-f", "restic --repo "+local).Run() == nil {
			return fmt.Errorf("restic still runs after the server was killed")
		}
		return nil
	})
	srv = startServer(t, data, cfg, srv.httpAddr, srv.sshAddr, "--isolation", "process")
	inData("rm big; head -c 1048576 /dev/urandom > f5")
	u.gantry("snapshot", "restore", "web", last[:8])
	if got := inData("cat f5 | md5sum"); got != wantNote {
		t.Errorf("after a killed save, the earlier snapshot restores f5 as %s; want %s", got, wantNote)
	}
	u.gantry("snapshot", "save", "web")
	u.gantryJSON(&list, "snapshot", "list", "web")
	if len(list) != 12 {
		t.Errorf("%d snapshots listed after the killed save and one more; want 12", len(list))
	}
	if out := u.gantry("admin", "backup", "check"); !strings.Contains(out, "is whole") {
		t.Errorf("check after the killed save:\n%s", out)
	}

	// kill -9 in the middle of a restore (after the data moved, before
	// the settings and the deployment): the server finishes it when it
	// starts again.
	srv.stop()
	srv = startServerVia(t, []string{"env", "GANTRY_FAILPOINT=restore-after-data"}, data, cfg, srv.httpAddr, srv.sshAddr, "--isolation", "process")
	u.gantry("env", "set", "web", "MARK=after")
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v2"), 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v2")
	u.runIn(repo, "git", "push", "-q")
	inData("echo later > note.txt")
	if got := mustGet(t, srv.httpClient(), srv.url(host, "/")); got != "v2 \n" {
		t.Fatalf("before the restore: %q", got)
	}
	u.gantryFails("snapshot", "restore", "web", s0.ID[:8])
	select {
	case <-srv.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the failpoint did not kill the server")
	}
	srv = startServer(t, data, cfg, srv.httpAddr, srv.sshAddr, "--isolation", "process")
	eventually(t, "the restore finished by the restarted server", 60*time.Second, func() error {
		if ev := u.gantry("app", "events", "web"); !strings.Contains(ev, "was finished") {
			return fmt.Errorf("no event of the finished restore:\n%s", ev)
		}
		return nil
	})
	if got := mustGet(t, srv.httpClient(), srv.url(host, "/")); got != "v1 \n" {
		t.Errorf("after the finished restore the app serves %q; want v1", got)
	}
	if got := inData("cat note.txt"); got != "sftp" {
		t.Errorf("the data after the finished restore: %q", got)
	}
	if out := u.gantry("env", "list", "web"); strings.Contains(out, "MARK") {
		t.Errorf("the env after the finished restore still has MARK:\n%s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(data, "restores", "*")); len(left) > 0 {
		t.Errorf("what the restore read back is left: %v", left)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
