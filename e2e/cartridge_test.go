package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

type cartridgeJSON struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Username string `json:"username"`
	Password string `json:"password"`
	Database string `json:"database"`
}

// TestCartridges: PostgreSQL and Redis beside an app, reached by the app
// through its environment and by the user through port-forward with the
// real psql and redis-cli; the data survives restarts.
func TestCartridges(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "psql", "redis-cli", "redis-server")
	t.Run("process", func(t *testing.T) { cartridges(t, isolationArgs(t, "process")) })
	t.Run("namespaces", func(t *testing.T) { cartridges(t, isolationArgs(t, "namespaces")) })
}

func cartridges(t *testing.T, isolation []string) {
	top := t
	root := t.TempDir()
	// Like /var/lib: apps' users may traverse to their own directories.
	os.Chmod(root, 0o711)
	os.Chmod(filepath.Dir(root), 0o711)
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	cfg := filepath.Join(root, "admin.json")
	// A cron minute lasts 2 s here.
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", slices.Concat(isolation, []string{"--cron-minute", "2s"})...)
	u := newEnv(t, cfg)
	hc := srv.httpClient()
	host := "web-db.localhost"
	_, repo := deployNodeApp(t, u, "db", "web")

	var pg cartridgeJSON
	u.gantryJSON(&pg, "cartridge", "add", "web", "postgresql")
	if !strings.HasPrefix(pg.URL, "postgresql://"+pg.Username+":"+pg.Password+"@") || pg.Database != "web" {
		t.Fatalf("cartridge: %+v", pg)
	}
	// The app sees it in its environment, under both names.
	if got := mustGet(t, hc, srv.url(host, "/env/DATABASE_URL")); got != pg.URL {
		t.Errorf("DATABASE_URL in the gear: %q; want %q", got, pg.URL)
	}
	if got := mustGet(t, hc, srv.url(host, "/env/OPENSHIFT_POSTGRESQL_DB_HOST")); got != pg.Host {
		t.Errorf("OPENSHIFT_POSTGRESQL_DB_HOST: %q", got)
	}
	// A one-off run: a fresh gear with the app's env and code, reaching
	// the database, its exit status passed back; then it is gone.
	var before appJSON
	u.gantryJSON(&before, "app", "show", "web")
	runOut, err := u.exec("", u.cli(), "run", "web", "--", "sh", "-c", `'echo url=$DATABASE_URL; ls server.js; psql "$DATABASE_URL" -tAc "select 40+2"; exit 3'`)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(runOut, "url="+pg.URL) || !strings.Contains(runOut, "server.js") || !strings.Contains(runOut, "\n42\n") {
		t.Errorf("gantry run: %v\n%s", err, runOut)
	}
	var after appJSON
	u.gantryJSON(&after, "app", "show", "web")
	running := func(a appJSON) (ids []string) {
		for _, g := range a.Gears {
			if g.State != "draining" {
				ids = append(ids, g.ID)
			}
		}
		return ids
	}
	if fmt.Sprint(running(after)) != fmt.Sprint(running(before)) {
		t.Errorf("gears after the run: %+v; before: %+v", after.Gears, before.Gears)
	}
	// For scripts, over the API: the output and exit code in JSON.
	var rv struct {
		Gear     string
		ExitCode *int `json:"exit_code"`
		Output   string
	}
	raw, err := u.exec("", u.cli(), "run", "web", "--json", "--", "echo", "from-api;", "exit", "4")
	if json.Unmarshal([]byte(raw), &rv) != nil || rv.ExitCode == nil || *rv.ExitCode != 4 || rv.Output != "from-api\n" || !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("gantry run --json: %v %s", err, raw)
	}
	// Detached: at once; its output in the app's logs, labelled run; then
	// its gear is gone.
	raw, err = u.exec("", u.cli(), "run", "web", "--detach", "--json", "--", "sleep", "2;", "echo", "detached-ran")
	if err != nil || json.Unmarshal([]byte(raw), &rv) != nil || rv.Gear == "" {
		t.Fatalf("gantry run --detach: %v %s", err, raw)
	}
	// gantry ps shows it beside the web gears and the database.
	var ps []struct{ Process, Gear, State string }
	u.gantryJSON(&ps, "ps", "web")
	seen := map[string]bool{}
	for _, r := range ps {
		seen[r.Process] = true
		if r.Process == "run" && r.Gear != rv.Gear {
			t.Errorf("ps shows one-off %s; want %s", r.Gear, rv.Gear)
		}
	}
	if !seen["web"] || !seen["run"] || !seen["postgresql"] {
		t.Errorf("gantry ps during a detached run: %+v", ps)
	}
	eventually(t, "the detached run's output in the logs, its gear gone", 30*time.Second, func() error {
		logs := u.gantry("logs", "web")
		if !strings.Contains(logs, "detached-ran") || !strings.Contains(logs, "one-off command exited with status 0") {
			return fmt.Errorf("logs:\n%s", logs)
		}
		var a appJSON
		u.gantryJSON(&a, "app", "show", "web")
		for _, g := range a.Gears {
			if g.ID == rv.Gear {
				return fmt.Errorf("gear %s is still there (%s)", g.ID, g.State)
			}
		}
		return nil
	})
	// A release command runs once per deployment before the gears switch,
	// with the new code and the env (its database); one that fails refuses
	// the push and leaves the app as it was.
	writeFile(t, filepath.Join(repo, "Procfile"), "web: node server.js\nrelease: psql \"$DATABASE_URL\" -qc 'create table if not exists releases (n int)' -c 'insert into releases values (1)'\n", 0o644)
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v2"), 0o644)
	// OpenShift's deploy hook runs the same way, first: the database is
	// reachable from it (a build step's sandbox does not reach it).
	writeFile(t, filepath.Join(repo, ".openshift", "action_hooks", "deploy"), "#!/bin/sh\npsql \"$DATABASE_URL\" -qc 'create table if not exists releases (n int)' -c 'insert into releases values (0)'\n", 0o755)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v2 with a release")
	if out := u.runIn(repo, "git", "push"); !strings.Contains(out, "Running the release command") || !strings.Contains(out, "Running the deploy hook") {
		t.Errorf("push with a deploy hook and a release command:\n%s", out)
	}
	if got := mustGet(t, hc, srv.url(host, "/")); got != "v2 \n" {
		t.Errorf("after the release: %q", got)
	}
	if out := u.gantry("run", "web", "--", "psql", `"$DATABASE_URL"`, "-tAc", `"select string_agg(n::text, ',' order by n) from releases"`); !strings.Contains(out, "0,1") {
		t.Errorf("rows the deploy hook and the release wrote: %q; want 0,1", out)
	}
	writeFile(t, filepath.Join(repo, "Procfile"), "web: node server.js\nrelease: echo migration broke; exit 7\n", 0o644)
	writeFile(t, filepath.Join(repo, "server.js"), nodeApp("v3"), 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v3 with a failing release")
	if out, err := u.exec(repo, "git", "push"); err == nil || !strings.Contains(out, "migration broke") || !strings.Contains(out, "release command failed") {
		t.Errorf("push with a failing release (%v):\n%s", err, out)
	}
	if got := mustGet(t, hc, srv.url(host, "/")); got != "v2 \n" {
		t.Errorf("after a failed release the app serves %q; want v2 as it was", got)
	}
	// The release's output is in the app's logs too (and so in drains).
	if logs := u.gantry("logs", "web", "--lines", "500"); !regexp.MustCompile(`release/\S+\[stdout\]: migration broke`).MatchString(logs) {
		t.Errorf("the failed release's output is not in the logs as release/DEPLOYMENT:\n%s", logs)
	}
	workers(t, u, repo)
	cronJobs(t, u, repo)

	if out := u.gantryFails("run", "nosuchapp", "--", "true"); !strings.Contains(out, "nosuchapp") {
		t.Errorf("a run of an unknown app: %s", out)
	}
	var shown struct {
		Cartridges []cartridgeJSON `json:"cartridges"`
	}
	u.gantryJSON(&shown, "app", "show", "web")
	if len(shown.Cartridges) != 1 || shown.Cartridges[0].URL != pg.URL {
		t.Errorf("app show cartridges: %+v", shown.Cartridges)
	}

	// Something already on 5432 here: the forward takes the next port.
	if l, err := net.Listen("tcp", "127.0.0.1:5432"); err == nil {
		defer l.Close()
	}
	cmd := exec.Command(gantryBin, "port-forward", "web", "--service", "postgresql", "--json")
	cmd.Env = u.environ()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var fwd []forwardJSON
	if err := json.NewDecoder(out).Decode(&fwd); err != nil || len(fwd) != 1 {
		t.Fatalf("port-forward: %v %+v\n%s", err, fwd, stderr.String())
	}
	_, localPort, _ := net.SplitHostPort(fwd[0].Local)
	_, remotePort, _ := net.SplitHostPort(fwd[0].Remote)
	// Namespaced, the database listens on 5432 in its gear; plain, on a
	// host port, which is then taken here too. Either way: the next port.
	eventually(t, "port-forward says it took the next port", 5*time.Second, func() error {
		if localPort == remotePort || !strings.Contains(stderr.String(), "Port "+remotePort+" is in use") {
			return errorf("forward on %s for %s, said %q", fwd[0].Local, fwd[0].Remote, stderr.String())
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("port-forward said:\n%s", stderr.String())
		}
	})
	psql := func(sql string) string {
		t.Helper()
		c := exec.Command("psql", "-h", "127.0.0.1", "-p", localPort, "-U", pg.Username, "-d", pg.Database, "-tAc", sql)
		c.Env = append(os.Environ(), "PGPASSWORD="+pg.Password, "PGCONNECT_TIMEOUT=10")
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("psql %q: %v\n%s", sql, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	psql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
	psql("INSERT INTO notes (body) VALUES ('one'), ('two'), ('three')")
	if got := psql("SELECT count(*) FROM notes"); got != "3" {
		t.Fatalf("rows: %q", got)
	}
	// A wrong password is refused.
	bad := exec.Command("psql", "-h", "127.0.0.1", "-p", localPort, "-U", pg.Username, "-d", pg.Database, "-c", "select 1")
	bad.Env = append(os.Environ(), "PGPASSWORD=wrong", "PGCONNECT_TIMEOUT=5")
	if err := bad.Run(); err == nil {
		t.Error("psql with a wrong password worked")
	}

	t.Run("data_survives_restarts", func(t *testing.T) {
		u.gantry("app", "restart", "web")
		if got := psql("SELECT count(*) FROM notes"); got != "3" {
			t.Errorf("after app restart: %q", got)
		}
		// Kill the database's process: its shim restarts it, data intact.
		var svcs []struct {
			Name string `json:"name"`
			Gear string `json:"gear"`
		}
		tok := adminToken(t, cfg)
		req, _ := newAuthRequest("GET", "http://"+srv.httpAddr+"/v1/domains/db/apps/web/services", tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&svcs)
		resp.Body.Close()
		var pgGear string
		for _, s := range svcs {
			if s.Name == "postgresql" {
				pgGear = s.Gear
			}
		}
		st, _ := os.ReadFile(filepath.Join(data, "gears", pgGear, "state.json"))
		var state struct {
			PID int `json:"pid"`
		}
		json.Unmarshal(st, &state)
		if state.PID == 0 {
			t.Fatalf("no process for the postgresql gear %q: %s", pgGear, st)
		}
		syscall.Kill(state.PID, syscall.SIGKILL)
		t.Cleanup(func() {
			if t.Failed() { // what the database said about its restart
				logs, _ := filepath.Glob(filepath.Join(data, "apps", "*", "logs", pgGear+".log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s (last 4 KiB):\n%s", l, b[max(0, len(b)-4096):])
				}
				st, _ := os.ReadFile(filepath.Join(data, "gears", pgGear, "state.json"))
				t.Logf("state.json: %s", st)
			}
		})
		eventually(t, "postgresql comes back with its data", 60*time.Second, func() error {
			c := exec.Command("psql", "-h", "127.0.0.1", "-p", localPort, "-U", pg.Username, "-d", pg.Database, "-tAc", "SELECT count(*) FROM notes")
			c.Env = append(os.Environ(), "PGPASSWORD="+pg.Password, "PGCONNECT_TIMEOUT=3")
			b, err := c.CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != "3" {
				return errorf("%v %s", err, b)
			}
			return nil
		})
		// The server restarts: the database keeps running, the data stays.
		srv.stop()
		srv2 := startServer(top, data, cfg, srv.httpAddr, srv.sshAddr, isolation...)
		if m := reattachRE.FindStringSubmatch(srv2.log.String()); m == nil || m[1] != m[2] {
			t.Errorf("the server restart restarted gears:\n%s", srv2.log.String())
		}
		eventually(t, "the data after a server restart", 30*time.Second, func() error {
			c := exec.Command("psql", "-h", "127.0.0.1", "-p", localPort, "-U", pg.Username, "-d", pg.Database, "-tAc", "SELECT count(*) FROM notes")
			c.Env = append(os.Environ(), "PGPASSWORD="+pg.Password, "PGCONNECT_TIMEOUT=3")
			b, err := c.CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != "3" {
				return errorf("%v %s", err, b)
			}
			return nil
		})
	})

	t.Run("tail", func(t *testing.T) {
		out := u.gantry("logs", "web", "--lines", "500")
		if !strings.Contains(out, "postgresql/") || !strings.Contains(out, "web/") {
			t.Errorf("logs are not prefixed by process:\n%s", out)
		}
	})

	t.Run("redis", func(t *testing.T) {
		var rd cartridgeJSON
		u.gantryJSON(&rd, "cartridge", "add", "web", "redis")
		if got := mustGet(t, hc, srv.url(host, "/env/REDIS_URL")); got != rd.URL {
			t.Errorf("REDIS_URL: %q; want %q", got, rd.URL)
		}
		fwd, _ := portForward(t, u, "web", "--service", "redis")
		_, port, _ := net.SplitHostPort(fwd[0].Local)
		cli := func(args ...string) string {
			c := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", port, "--no-auth-warning", "-a", rd.Password}, args...)...)
			b, err := c.CombinedOutput()
			if err != nil {
				t.Fatalf("redis-cli %v: %v %s", args, err, b)
			}
			return strings.TrimSpace(string(b))
		}
		cli("SET", "greeting", "hello")
		if got := cli("GET", "greeting"); got != "hello" {
			t.Errorf("redis GET: %q", got)
		}
		u.gantry("cartridge", "remove", "web", "redis", "--yes")
		var list []cartridgeJSON
		u.gantryJSON(&list, "cartridge", "list", "web")
		if len(list) != 1 || list[0].Name != "postgresql" {
			t.Errorf("after removing redis: %+v", list)
		}
		if dirs, _ := filepath.Glob(filepath.Join(data, "apps", "*", "data", "redis")); len(dirs) != 0 {
			t.Errorf("redis data left: %v", dirs)
		}
	})
}

var reattachRE = regexp.MustCompile(`re-attached to gears" component=agent running=(\d+) total=(\d+)`)

// workers checks Procfile process types beyond web: a worker writes to the
// app's database, scales on its own, rolls with a deploy (the old workers
// get SIGTERM and finish), and bad counts change nothing.
func workers(t *testing.T, u *env, repo string) {
	t.Helper()
	// The worker records its beats, and its stop (the TERM trap), in the
	// database; sleep in the background so that the trap runs at once.
	writeFile(t, filepath.Join(repo, "worker.sh"), `psql "$DATABASE_URL" -qc 'create table if not exists beats (gear text, what text)' 2>/dev/null
trap 'psql "$DATABASE_URL" -qc "insert into beats values ('"'"'$GANTRY_GEAR_ID'"'"', '"'"'term'"'"')"; exit 0' TERM
echo "worker $GANTRY_GEAR_ID ($GANTRY_PROCESS_TYPE) up"
while true; do
  psql "$DATABASE_URL" -qc "insert into beats values ('$GANTRY_GEAR_ID', 'beat')"
  sleep 0.3 & wait $!
done
`, 0o644)
	writeFile(t, filepath.Join(repo, "Procfile"), "web: node server.js\nworker: exec sh worker.sh\n", 0o644)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v4 with a worker")
	if out := u.runIn(repo, "git", "push"); !strings.Contains(out, "Process types: web, worker") || !strings.Contains(out, "worker gear") {
		t.Errorf("push with a worker:\n%s", out)
	}
	type psRow struct{ Process, Gear, State string }
	workerGears := func() []string {
		var ps []psRow
		u.gantryJSON(&ps, "ps", "web")
		var ids []string
		for _, r := range ps {
			if r.Process == "worker" && r.State == "running" {
				ids = append(ids, r.Gear)
			}
		}
		sort.Strings(ids)
		return ids
	}
	rows := func(sql string) string {
		return strings.TrimSpace(u.gantry("run", "web", "--", "psql", `"$DATABASE_URL"`, "-tAc", `"`+sql+`"`))
	}
	beating := func(ids []string) {
		t.Helper()
		eventually(t, fmt.Sprintf("workers %v write to the database", ids), 30*time.Second, func() error {
			got := rows("select distinct gear from beats where what = 'beat' order by gear")
			for _, id := range ids {
				if !strings.Contains(got, id) {
					return fmt.Errorf("gears with beats: %q", got)
				}
			}
			return nil
		})
	}
	first := workerGears()
	if len(first) != 1 {
		t.Fatalf("worker gears after the push: %v; want 1", first)
	}
	beating(first)

	if out := u.gantry("ps", "scale", "web", "worker=2"); !strings.Contains(out, "web=1 worker=2") {
		t.Errorf("ps scale worker=2: %s", out)
	}
	two := workerGears()
	if len(two) != 2 {
		t.Fatalf("worker gears after scaling to 2: %v", two)
	}
	beating(two)

	// Bad counts: clear messages, nothing changed.
	for arg, want := range map[string]string{"clock=1": `no process type "clock"`, "worker=999": "beyond this platform's --max-gears", "web=0": "stop the app", "worker=x": "is not TYPE=N"} {
		if out := u.gantryFails("ps", "scale", "web", arg); !strings.Contains(out, want) {
			t.Errorf("ps scale %s: %s; want %q", arg, out, want)
		}
	}
	if got := workerGears(); strings.Join(got, " ") != strings.Join(two, " ") {
		t.Errorf("worker gears after refused scales: %v; want %v", got, two)
	}

	// A deploy rolls both workers: new gears, and the old ones stopped
	// with SIGTERM, so that they finished (their trap wrote 'term').
	writeFile(t, filepath.Join(repo, "v5"), "v5", 0o644)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v5")
	u.runIn(repo, "git", "push")
	eventually(t, "the old workers stop", 60*time.Second, func() error {
		now := workerGears()
		if len(now) != 2 || slices.Contains(now, two[0]) || slices.Contains(now, two[1]) {
			return fmt.Errorf("worker gears %v; want two new ones (old %v)", now, two)
		}
		if got := rows("select count(distinct gear) from beats where what = 'term'"); got != "2" {
			return fmt.Errorf("gears that stopped on SIGTERM: %q", got)
		}
		return nil
	})
	beating(workerGears())
	// Its output is in the app's logs, named worker even once the gear is
	// gone.
	if logs := u.gantry("logs", "web", "--lines", "500"); !strings.Contains(logs, "worker/"+two[0]+"[stdout]: worker "+two[0]+" (worker) up") {
		t.Errorf("the old worker's output is not in the app's logs as worker/%s:\n%s", two[0], logs)
	}
	u.gantry("ps", "scale", "web", "worker=0")
	eventually(t, "no worker runs", 60*time.Second, func() error {
		if got := workerGears(); len(got) != 0 {
			return fmt.Errorf("worker gears %v", got)
		}
		return nil
	})
}

// cronJobs checks scheduled jobs (a cron minute lasts 2 s on this server):
// an app.json entry observed twice with its exit status, an
// .openshift/cron/minutely executable with its output in the logs, a job
// still running when due again skipped, a schedule that does not parse
// refused; then the jobs go with the next deploy.
func cronJobs(t *testing.T, u *env, repo string) {
	t.Helper()
	writeFile(t, filepath.Join(repo, "app.json"), `{"cron": [
  {"command": "echo cron-ran as $GANTRY_PROCESS_TYPE; exit 5", "schedule": "* * * * *"},
  {"command": "sleep 5", "schedule": "* * * * *"}
]}`, 0o644)
	writeFile(t, filepath.Join(repo, ".openshift/cron/minutely/tick"), "#!/bin/sh\necho tick from $GANTRY_GEAR_ID\n", 0o755)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v6 with cron jobs")
	if out := u.runIn(repo, "git", "push"); !strings.Contains(out, "Cron: 3 job(s)") {
		t.Errorf("push with cron jobs:\n%s", out)
	}
	type cronRow struct {
		ID, Command, Source string
		Next                *time.Time
		Exit                *int
		Runs, Skipped       int
	}
	eventually(t, "each job ran twice, the long one skipped", 60*time.Second, func() error {
		var jobs []cronRow
		u.gantryJSON(&jobs, "cron", "list", "web")
		if len(jobs) != 3 {
			return fmt.Errorf("jobs: %+v", jobs)
		}
		for _, j := range jobs {
			switch {
			case j.Next == nil:
				return fmt.Errorf("%s has no next time", j.Source)
			case strings.HasPrefix(j.Command, "echo") && (j.Runs < 2 || j.Exit == nil || *j.Exit != 5):
				return fmt.Errorf("the failing job: %d runs, exit %v", j.Runs, j.Exit)
			case strings.HasSuffix(j.Source, "tick") && (j.Runs < 2 || j.Exit == nil || *j.Exit != 0):
				return fmt.Errorf("the minutely executable: %d runs, exit %v", j.Runs, j.Exit)
			case j.Command == "sleep 5" && j.Skipped < 1:
				return fmt.Errorf("the long job was never skipped: %+v", j)
			}
		}
		logs := u.gantry("logs", "web", "--lines", "2000")
		for _, want := range []string{"]: cron-ran as cron", "]: tick from run", "exited with status 5", "skipped: the run started at"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("logs lack %q:\n%s", want, logs)
			}
		}
		if !strings.Contains(logs, "cron/") {
			return fmt.Errorf("cron lines are not labelled cron/JOB:\n%s", logs)
		}
		return nil
	})
	if out := u.gantry("cron", "list", "web"); !strings.Contains(out, "exit 5") || !strings.Contains(out, "skipped") {
		t.Errorf("gantry cron list:\n%s", out)
	}
	if ev := u.gantry("app", "events", "web"); !strings.Contains(ev, "cron_skipped") || !strings.Contains(ev, "exited with status 5") {
		t.Errorf("app events lack the cron runs:\n%s", ev)
	}

	// A schedule that does not parse refuses the push; the jobs stay.
	writeFile(t, filepath.Join(repo, "app.json"), `{"cron": [{"command": "true", "schedule": "every day"}]}`, 0o644)
	u.runIn(repo, "git", "commit", "-qam", "v7 bad schedule")
	if out, err := u.exec(repo, "git", "push"); err == nil || !strings.Contains(out, `schedule "every day" does not parse`) {
		t.Errorf("push with a bad schedule (%v):\n%s", err, out)
	}
	var jobs []cronRow
	u.gantryJSON(&jobs, "cron", "list", "web")
	if len(jobs) != 3 {
		t.Errorf("jobs after a refused push: %+v", jobs)
	}
	// Without them, nothing more runs.
	os.Remove(filepath.Join(repo, "app.json"))
	os.RemoveAll(filepath.Join(repo, ".openshift/cron"))
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "v8 without cron")
	u.runIn(repo, "git", "push")
	if out := u.gantry("cron", "list", "web"); !strings.Contains(out, "has no cron jobs") {
		t.Errorf("cron list without jobs: %s", out)
	}
}
