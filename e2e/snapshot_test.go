package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A snapshot of an app with PostgreSQL rows, a file in its data directory
// and a deployment: saved, the app changed (rows, file, a new deploy),
// restored in place: rows, file and page as they were. The snapshot is
// read back with stock restic and the key alone.
// redisCLI is redis-cli in a gear, reaching the app's Redis cartridge.
const redisCLI = `redis-cli --no-auth-warning -h "$GANTRY_REDIS_IP" -p "$GANTRY_REDIS_PORT" -a "$REDIS_PASSWORD"`

func TestSnapshots(t *testing.T) {
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is not installed: run scripts/install-deps")
	}
	isolation := isolationArgs(t, "namespaces")
	root := t.TempDir()
	os.Chmod(root, 0o711)
	os.Chmod(filepath.Dir(root), 0o711)
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", slices.Concat(isolation, []string{"--backup-min-every", "1s"})...)
	u := newEnv(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range strings.Split(srv.log.String(), "\n") {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "snapshot") {
					t.Log(l)
				}
			}
		}
	})
	hc := srv.httpClient()
	host := "web-snap.localhost"
	_, repo := deployNodeApp(t, u, "snap", "web")
	u.gantry("cartridge", "add", "web", "postgresql")
	u.gantry("cartridge", "add", "web", "redis")
	sql := func(q string) string {
		t.Helper()
		return strings.TrimSpace(u.gantry("run", "web", "--", "psql", `"$DATABASE_URL"`, "-tAc", `"`+q+`"`))
	}
	redis := func(app string, args ...string) string {
		t.Helper()
		return strings.TrimSpace(u.gantry(append([]string{"run", app, "--", redisCLI}, args...)...))
	}
	sql("create table notes (n int); insert into notes values (1), (2)")
	redis("web", "set", "k", "one")
	u.gantry("run", "web", "--", "sh", "-c", `'echo one > "$GANTRY_DATA_DIR/note.txt"'`)
	u.gantry("alias", "add", "web", "www.snap.test")

	var snap struct {
		ID      string   `json:"id"`
		ShortID string   `json:"short_id"`
		Holds   []string `json:"holds"`
		Added   int64    `json:"added"`
	}
	u.gantryJSON(&snap, "snapshot", "save", "web")
	if snap.ID == "" || strings.Join(snap.Holds, ",") != "settings,aliases,repository,postgresql,redis,data" || snap.Added == 0 {
		t.Fatalf("snapshot save: %+v", snap)
	}
	if out := u.gantry("snapshot", "list", "web"); !strings.Contains(out, snap.ShortID) {
		t.Errorf("snapshot list:\n%s", out)
	}

	// The app changes: rows, the file, a new deployment.
	sql("delete from notes; insert into notes values (9)")
	redis("web", "set", "k", "two")
	redis("web", "set", "later", "x")
	u.gantry("alias", "remove", "web", "www.snap.test")
	u.gantry("run", "web", "--", "sh", "-c", `'echo two > "$GANTRY_DATA_DIR/note.txt"'`)
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v2"), 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v2")
	u.runIn(repo, "git", "push", "-q")
	if got := mustGet(t, hc, srv.url(host, "/")); got != "v2 \n" {
		t.Fatalf("after v2: %q", got)
	}

	if out := u.gantryFails("snapshot", "restore", "web", "ffffffff"); !strings.Contains(out, "no snapshot") {
		t.Errorf("restoring a snapshot that is not there: %s", out)
	}
	u.gantry("snapshot", "restore", "web", snap.ShortID)
	if got := mustGet(t, hc, srv.url(host, "/")); got != "v1 \n" {
		t.Errorf("after the restore the app serves %q; want v1", got)
	}
	if got := sql("select string_agg(n::text, ',' order by n) from notes"); got != "1,2" {
		t.Errorf("rows after the restore: %q; want 1,2", got)
	}
	if got := strings.TrimSpace(u.gantry("run", "web", "--", "cat", `"$GANTRY_DATA_DIR/note.txt"`)); got != "one" {
		t.Errorf("the data file after the restore: %q", got)
	}
	if got := redis("web", "get", "k") + "," + redis("web", "exists", "later"); got != "one,0" {
		t.Errorf("Redis after the restore: k, exists later = %q; want one,0", got)
	}
	if out := u.gantry("alias", "list", "web"); !strings.Contains(out, "www.snap.test") {
		t.Errorf("the alias is not back after the restore:\n%s", out)
	}
	if ev := u.gantry("app", "events", "web"); !strings.Contains(ev, "restored snapshot "+snap.ShortID) {
		t.Errorf("app events:\n%s", ev)
	}

	// A new app from the snapshot: both serve, each with its own
	// database and credentials.
	u.gantry("snapshot", "restore", "web", snap.ShortID, "--to", "copy")
	if got := mustGet(t, hc, srv.url("copy-snap.localhost", "/")); got != "v1 \n" {
		t.Errorf("the copy serves %q; want v1", got)
	}
	copySQL := func(q string) string {
		t.Helper()
		return strings.TrimSpace(u.gantry("run", "copy", "--", "psql", `"$DATABASE_URL"`, "-tAc", `"`+q+`"`))
	}
	if got := copySQL("select string_agg(n::text, ',' order by n) from notes"); got != "1,2" {
		t.Errorf("the copy's rows: %q; want 1,2", got)
	}
	copySQL("insert into notes values (3)")
	if got := sql("select count(*) from notes"); got != "2" {
		t.Errorf("the copy's insert reached the original: %q rows", got)
	}
	if got := strings.TrimSpace(u.gantry("run", "copy", "--", "cat", `"$GANTRY_DATA_DIR/note.txt"`)); got != "one" {
		t.Errorf("the copy's data file: %q", got)
	}
	// The copy's own user owns its files: it writes them.
	u.gantry("run", "copy", "--", "sh", "-c", `'echo copy >> "$GANTRY_DATA_DIR/note.txt"'`)
	if got := redis("copy", "get", "k"); got != "one" {
		t.Errorf("the copy's Redis: k = %q", got)
	}
	var orig, cp struct {
		Cartridges []cartridgeJSON `json:"cartridges"`
	}
	u.gantryJSON(&orig, "app", "show", "web")
	u.gantryJSON(&cp, "app", "show", "copy")
	if len(cp.Cartridges) != 2 || len(orig.Cartridges) != 2 || cp.Cartridges[0].Password == orig.Cartridges[0].Password || cp.Cartridges[1].Password == orig.Cartridges[1].Password {
		t.Errorf("the copy's database credentials are not its own: %+v vs %+v", cp.Cartridges, orig.Cartridges)
	}
	if out := u.gantryFails("snapshot", "restore", "web", snap.ShortID, "--to", "copy"); !strings.Contains(out, "already has an app") {
		t.Errorf("a copy onto a taken name: %s", out)
	}

	// Export, then import on a second platform (its own data directory):
	// the same page, rows, Redis keys, data file and alias.
	archive := filepath.Join(t.TempDir(), "web.tar.zst")
	u.gantry("snapshot", "export", "web", snap.ShortID, "-o", archive)
	data2, cfg2 := filepath.Join(root, "data2"), filepath.Join(root, "admin2.json")
	t.Cleanup(func() { killGears(data2) })
	srv2 := startServer(t, data2, cfg2, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
	u2 := newEnv(t, cfg2)
	u2.gantry("sshkey", "add", filepath.Join(u2.home, ".ssh", "id_ed25519.pub"))
	u2.gantry("domain", "create", "moved")
	bad := filepath.Join(t.TempDir(), "bad.tar.zst")
	writeFile(t, bad, "not an archive", 0o644)
	if out := u2.gantryFails("snapshot", "import", "nope", "-f", bad); !strings.Contains(out, "not a Gantry snapshot") {
		t.Errorf("importing a file that is not an archive: %s", out)
	}
	if out := u2.gantry("app", "list"); strings.Contains(out, "nope") {
		t.Errorf("a failed import left an app:\n%s", out)
	}
	u2.gantry("snapshot", "import", "-f", archive)
	if got := mustGet(t, srv2.httpClient(), srv2.url("web-moved.localhost", "/")); got != "v1 \n" {
		t.Errorf("the imported app serves %q; want v1", got)
	}
	if got := strings.TrimSpace(u2.gantry("run", "web", "--", "psql", `"$DATABASE_URL"`, "-tAc", `"select string_agg(n::text, ',' order by n) from notes"`)); got != "1,2" {
		t.Errorf("the imported app's rows: %q", got)
	}
	if got := strings.TrimSpace(u2.gantry("run", "web", "--", redisCLI, "get", "k")); got != "one" {
		t.Errorf("the imported app's Redis: %q", got)
	}
	if got := strings.TrimSpace(u2.gantry("run", "web", "--", "cat", `"$GANTRY_DATA_DIR/note.txt"`)); got != "one" {
		t.Errorf("the imported app's data file: %q", got)
	}
	if out := u2.gantry("alias", "list", "web"); !strings.Contains(out, "www.snap.test") {
		t.Errorf("the imported app's alias:\n%s", out)
	}
	srv2.stop()

	// Scheduled backups with retention: every 2 s, the last 2 kept.
	for args, want := range map[string]string{
		"--every 10ms --keep-last 2": "at least 1s",
		"--every 2s":                 "say which snapshots to keep",
	} {
		if out := u.gantryFails(append([]string{"backup", "schedule", "web"}, strings.Fields(args)...)...); !strings.Contains(out, want) {
			t.Errorf("backup schedule %s: %s; want %q", args, out, want)
		}
	}
	u.gantry("backup", "schedule", "web", "--every", "2s", "--keep-last", "2")
	eventually(t, "three scheduled backups, two snapshots kept", 60*time.Second, func() error {
		if n := strings.Count(u.gantry("app", "events", "web"), "scheduled snapshot"); n < 3 {
			return fmt.Errorf("%d scheduled backups", n)
		}
		var list []struct {
			ID string `json:"id"`
		}
		u.gantryJSON(&list, "snapshot", "list", "web")
		if len(list) != 2 {
			return fmt.Errorf("%d snapshots listed", len(list))
		}
		return nil
	})
	if out := u.gantry("backup", "schedule", "web", "--off"); !strings.Contains(out, "no scheduled backups") {
		t.Errorf("backup schedule --off: %s", out)
	}
	// Counted in metrics: a failed backup is never silent.
	req, _ := http.NewRequest("GET", "http://"+srv.httpAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken(t, cfg))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io_ReadAll(resp)
	if !strings.Contains(string(m), `gantry_backups_total{app="snap/web",result="ok"}`) || !strings.Contains(string(m), `gantry_app_events_total{app="snap/web",kind="snapshot"}`) {
		t.Errorf("metrics lack the backups:\n%s", m)
	}

	// Without Gantry: stock restic and the key.
	var key struct{ Repository, Key string }
	u.gantryJSON(&key, "admin", "backup", "key")
	keyFile := filepath.Join(t.TempDir(), "key")
	writeFile(t, keyFile, key.Key+"\n", 0o600)
	restic := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("restic", append([]string{"--repo", key.Repository, "--password-file", keyFile, "--no-cache"}, args...)...).Output()
		if err != nil {
			t.Fatalf("restic %v: %v", args, err)
		}
		return string(out)
	}
	var listed []struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(restic("snapshots", "--json", "--tag", "name:snap/web")), &listed)
	if len(listed) != 2 {
		t.Fatalf("restic's own list: %+v; want the 2 kept", listed)
	}
	target := t.TempDir()
	restic("restore", listed[0].ID, "--target", target)
	found := false
	filepath.Walk(target, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "note.txt" {
			b, _ := os.ReadFile(p)
			found = strings.TrimSpace(string(b)) == "one"
		}
		return nil
	})
	if !found {
		t.Error("stock restic did not restore the data file")
	}

	// Another target: new snapshots go there; earlier ones are restored
	// from where they were. Check reads it all back and finds a pack the
	// test damages.
	if out := u.gantryFails("admin", "backup", "target", "set", "relative/dir"); !strings.Contains(out, "not a backup target") {
		t.Errorf("a relative target: %s", out)
	}
	target2 := filepath.Join(root, "backups2")
	u.gantry("admin", "backup", "target", "set", target2)
	var s2 struct {
		ID string `json:"id"`
	}
	u.gantryJSON(&s2, "snapshot", "save", "web")
	if _, err := os.Stat(filepath.Join(target2, "config")); err != nil {
		t.Errorf("the new target holds no repository: %v", err)
	}
	sql("insert into notes values (7)")
	u.gantry("snapshot", "restore", "web", listed[0].ID[:8]) // in the first repository
	if got := sql("select string_agg(n::text, ',' order by n) from notes"); got != "1,2" {
		t.Errorf("rows after restoring from the earlier target: %q", got)
	}
	if out := u.gantry("admin", "backup", "check"); !strings.Contains(out, "is whole") {
		t.Errorf("backup check:\n%s", out)
	}
	packs, _ := filepath.Glob(filepath.Join(target2, "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack in the new target")
	}
	f, _ := os.OpenFile(packs[0], os.O_WRONLY, 0)
	f.WriteAt([]byte("damage!!"), 64)
	f.Close()
	if out := u.gantryFails("admin", "backup", "check"); !strings.Contains(out, "has errors") {
		t.Errorf("backup check of a damaged pack:\n%s", out)
	}

	// Another user reaches none of it.
	var bob struct {
		Token string `json:"token"`
	}
	u.gantryJSON(&bob, "user", "create", "bob")
	b := newEnv(t, filepath.Join(root, "bob.json"))
	b.gantry("login", "--server", "http://"+srv.httpAddr, "--token", bob.Token)
	for _, args := range [][]string{{"snapshot", "save", "snap/web"}, {"snapshot", "list", "snap/web"}, {"snapshot", "export", "snap/web", s2.ID[:8], "-o", filepath.Join(b.home, "x")}, {"snapshot", "restore", "snap/web", s2.ID[:8]}} {
		if out := b.gantryFails(args...); !strings.Contains(out, "no app") {
			t.Errorf("bob: gantry %v: %s", args, out)
		}
	}
	for _, args := range [][]string{{"admin", "backup", "target", "set", "/tmp/elsewhere"}, {"admin", "backup", "check"}, {"admin", "backup", "key"}} {
		if out := b.gantryFails(args...); !strings.Contains(out, "only admins") {
			t.Errorf("bob: gantry %v: %s", args, out)
		}
	}
}
