package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// A repository made once with a root-only key; a backup listed by its tag
// and restored as it was; check passes, and fails on a corrupt pack.
func TestRepo(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is not installed: run scripts/install-deps")
	}
	dir := t.TempDir()
	r := Repo{Location: filepath.Join(dir, "repo"), Password: NewPassword()}
	ctx := context.Background()
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Init(ctx); err != nil {
		t.Fatalf("a second init: %v", err)
	}
	wrong := r
	wrong.Password = NewPassword()
	if err := wrong.Init(ctx); err == nil || !strings.Contains(err.Error(), "made with another key") {
		t.Errorf("a wrong key: %v", err)
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "skip"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello"), 0o640)
	os.WriteFile(filepath.Join(src, "skip", "b.txt"), []byte("no"), 0o640)
	s, err := r.Backup(ctx, []string{"app:x"}, []string{src}, []string{filepath.Join(src, "skip")})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ID) != 8 || s.Added == 0 {
		t.Errorf("snapshot %+v", s)
	}
	list, err := r.Snapshots(ctx, "app:x")
	if err != nil || len(list) != 1 || !SameID(list[0].ID, s.ID) || len(list[0].ID) != 64 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if other, _ := r.Snapshots(ctx, "app:y"); len(other) != 0 {
		t.Errorf("another tag lists %+v", other)
	}
	target := filepath.Join(dir, "out")
	if err := r.Restore(ctx, s.ID, target); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, src, "a.txt")); string(b) != "hello" {
		t.Errorf("restored %q", b)
	}
	if _, err := os.Stat(filepath.Join(target, src, "skip", "b.txt")); !os.IsNotExist(err) {
		t.Errorf("an excluded file was saved: %v", err)
	}
	var out bytes.Buffer
	if err := r.Check(ctx, &out); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	packs, _ := filepath.Glob(filepath.Join(r.Location, "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack file")
	}
	f, _ := os.OpenFile(packs[0], os.O_WRONLY, 0)
	f.WriteAt([]byte("corrupt!"), 10)
	f.Close()
	if err := r.Check(ctx, &out); err == nil {
		t.Error("check passed with a corrupt pack")
	}
}

// A restic killed in the middle (as it is when the server is) leaves its
// lock behind; the next command removes the stale lock and goes on.
func TestStaleLock(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is not installed: run scripts/install-deps")
	}
	dir := t.TempDir()
	r := Repo{Location: filepath.Join(dir, "repo"), Password: NewPassword()}
	ctx := context.Background()
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// A lock as a killed restic leaves it: restic holds one while it
	// lists; SIGKILL it while it waits on stdin for a password it never gets.
	cmd := exec.Command("restic", "--repo", r.Location, "--no-cache", "backup", "--stdin", "--stdin-filename", "x")
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD="+r.Password)
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("partial"))
	for i := 0; i < 200; i++ {
		if locks, _ := filepath.Glob(filepath.Join(r.Location, "locks", "*")); len(locks) > 0 {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if locks, _ := filepath.Glob(filepath.Join(r.Location, "locks", "*")); len(locks) == 0 {
		t.Fatal("the killed restic left no lock; the test proves nothing")
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	if _, err := r.Backup(ctx, []string{"app:x"}, []string{src}, nil); err != nil {
		t.Fatalf("a backup after a killed restic: %v", err)
	}
	// forget --prune needs the repository to itself: the stale lock
	// would stop it.
	if _, err := r.Forget(ctx, "app:x", Keep{Last: 1}); err != nil {
		t.Fatalf("forget --prune after a killed restic: %v", err)
	}
	var out bytes.Buffer
	if err := r.Check(ctx, &out); err != nil {
		t.Fatalf("check after a killed restic: %v\n%s", err, out.String())
	}
}

func TestLocations(t *testing.T) {
	for loc, want := range map[string]string{
		"sftp://backup@host/gantry":          "backup host 22",
		"sftp://backup@10.0.0.1:2222//srv/g": "backup 10.0.0.1 2222",
		"sftp:backup@host:/srv/gantry":       "backup host 22",
		"sftp://host/gantry":                 "",
		"/srv/gantry":                        "",
	} {
		u, h, p, ok := SFTPAddress(loc)
		got := ""
		if ok {
			got = u + " " + h + " " + p
		}
		if got != want {
			t.Errorf("SFTPAddress(%q) = %q; want %q", loc, got, want)
		}
	}
	if got := Redact("rest:https://u:secret@host/repo"); strings.Contains(got, "secret") {
		t.Errorf("Redact left the password: %s", got)
	}
	if got := Redact("/srv/gantry"); got != "/srv/gantry" {
		t.Errorf("Redact(/srv/gantry) = %s", got)
	}
}

// An archive round-trips; one that unpacks beyond the limit, or names a
// path outside its directory, is refused; set-user-ID bits are dropped.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "snapshot"), 0o700)
	os.WriteFile(filepath.Join(src, "snapshot", "app.json"), []byte(`{"version":1}`), 0o600)
	os.MkdirAll(filepath.Join(src, "data"), 0o755)
	os.WriteFile(filepath.Join(src, "data", "big"), bytes.Repeat([]byte("x"), 1<<20), 0o644)
	os.WriteFile(filepath.Join(src, "data", "suid"), []byte("#!/bin/sh"), 0o755)
	os.Chmod(filepath.Join(src, "data", "suid"), 0o4755)
	var buf bytes.Buffer
	if err := WriteArchive(&buf, src); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 64<<10 {
		t.Errorf("1 MiB of x compressed to %d bytes", buf.Len())
	}
	out := filepath.Join(dir, "out")
	if err := ReadArchive(bytes.NewReader(buf.Bytes()), out, 10<<20); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "snapshot", "app.json")); string(b) != `{"version":1}` {
		t.Errorf("app.json: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(out, "data", "suid")); err != nil || fi.Mode()&os.ModeSetuid != 0 {
		t.Errorf("suid: %v %v", fi.Mode(), err)
	}
	if err := ReadArchive(bytes.NewReader(buf.Bytes()), filepath.Join(dir, "small"), 100<<10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("beyond the limit: %v", err)
	}
	if err := ReadArchive(strings.NewReader("not zstd at all"), filepath.Join(dir, "bad"), 1<<20); err == nil {
		t.Error("a file that is not an archive was read")
	}
	// A tar entry that climbs out.
	var evil bytes.Buffer
	zw, _ := zstd.NewWriter(&evil)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	zw.Close()
	if err := ReadArchive(&evil, filepath.Join(dir, "evil", "in"), 1<<20); err == nil {
		t.Error("an entry outside the directory was unpacked")
	}
	if _, err := os.Stat(filepath.Join(dir, "evil", "escape")); err == nil {
		t.Error("the escaping entry was written")
	}
}

// An RDB saved from a running Redis (with keys, a TTL, a binary value) is
// put back into it whole after it changed: keys added since are gone.
func TestRedis(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run scripts/install-deps")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	srv := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", dir, "--requirepass", "pw", "--appendonly", "yes", "--save", "")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	ctx := context.Background()
	var c *respConn
	for i := 0; ; i++ {
		if c, err = dialResp(ctx, "tcp", addr); err == nil {
			break
		}
		if i > 200 {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	defer c.Close()
	do := func(args ...string) any {
		t.Helper()
		v, err := c.do(args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return v
	}
	do("AUTH", "pw")
	do("SET", "a", "1")
	do("SET", "bin", "\x00\r\n\xff")
	do("SET", "ttl", "x", "EX", "1000")
	do("RPUSH", "list", "p", "q")
	do("SELECT", "3")
	do("SET", "other-db", "yes")
	do("SELECT", "0")
	rdb := filepath.Join(dir, "snap.rdb")
	if err := SaveRedis(ctx, addr, "pw", rdb); err != nil {
		t.Fatal(err)
	}
	do("SET", "a", "2")
	do("SET", "later", "gone")
	do("DEL", "list")
	if err := LoadRedis(ctx, rdb, addr, "pw"); err != nil {
		t.Fatal(err)
	}
	if v := do("GET", "a"); v != "1" {
		t.Errorf("a = %v", v)
	}
	if v := do("GET", "bin"); v != "\x00\r\n\xff" {
		t.Errorf("bin = %q", v)
	}
	if v := do("EXISTS", "later"); v != int64(0) {
		t.Errorf("a key made after the snapshot is still there")
	}
	if v := do("LRANGE", "list", "0", "-1"); fmt.Sprint(v) != "[p q]" {
		t.Errorf("list = %v", v)
	}
	if v, _ := do("TTL", "ttl").(int64); v < 900 || v > 1000 {
		t.Errorf("ttl = %v", v)
	}
	do("SELECT", "3")
	if v := do("GET", "other-db"); v != "yes" {
		t.Errorf("db 3: %v", v)
	}
	if err := LoadRedis(ctx, rdb, addr, "wrong"); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("a wrong password: %v", err)
	}
}
