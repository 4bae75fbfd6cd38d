package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestBuildLimitsAndCache (namespaced): builds run under their own memory
// limit, not the app's gear size, and one killed for memory says so (the
// running app stays); Node.js gears get NODE_ENV=production; the build
// cache is kept between pushes and dropped with `app purge-cache`.
func TestBuildLimitsAndCache(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "npm")
	// 160 MiB for builds, far below the small gear's 512 MiB: the hog below
	// fits a gear but not a build.
	srv, u := namespacedUser(t, "--build-memory", strconv.Itoa(160<<20))
	hc := srv.httpClient()

	repo := func(name, build string) string {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dir, 0o755)
		u.runIn(dir, "git", "init", "-q", "-b", "main")
		writeFile(t, filepath.Join(dir, "package.json"), `{"name": "`+name+`", "scripts": {"start": "node server.js", "build": `+strconv.Quote(build)+`}}`, 0o644)
		writeFile(t, filepath.Join(dir, "server.js"), nodeApp(name), 0o644)
		u.runIn(dir, "git", "add", "-A")
		u.runIn(dir, "git", "commit", "-qm", name)
		return dir
	}

	t.Run("build_out_of_memory", func(t *testing.T) {
		// A first version deploys; a build that eats memory is refused
		// with the reason, and the first version keeps serving.
		dir := repo("hog", "true")
		var app appJSON
		u.gantryJSON(&app, "app", "create", "hog")
		u.runIn(dir, "git", "push", "-q", app.GitURL, "main")
		writeFile(t, filepath.Join(dir, "package.json"), `{"name": "hog", "scripts": {"start": "node server.js", "build": "node -e \"const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))\""}}`, 0o644)
		u.runIn(dir, "git", "commit", "-qam", "hungry build")
		out, err := u.exec(dir, "git", "push", app.GitURL, "main")
		if err == nil || !strings.Contains(out, "ran out of memory") || !strings.Contains(out, "--build-memory") || !strings.Contains(out, "160 MiB") {
			t.Fatalf("a build over its memory limit: err=%v\n%s", err, out)
		}
		if body := mustGet(t, hc, srv.url("hog-acme.localhost", "/")); body != "hog \n" {
			t.Errorf("the running app after a refused build: %q", body)
		}
		if env := mustGet(t, hc, srv.url("hog-acme.localhost", "/env/NODE_ENV")); env != "production" {
			t.Errorf("NODE_ENV in the gear: %q; want production", env)
		}
	})

	t.Run("cache_kept_and_purged", func(t *testing.T) {
		// The build leaves 2 MiB in the npm cache; it is there for the next
		// build, and purge-cache drops it.
		dir := repo("warm", `node -e "const f = process.env.npm_config_cache + '/warm'; const fs = require('fs'); console.log(fs.existsSync(f) ? 'cache: warm' : 'cache: cold'); fs.mkdirSync(process.env.npm_config_cache, {recursive: true}); fs.writeFileSync(f, Buffer.alloc(2 << 20))"`)
		var app appJSON
		u.gantryJSON(&app, "app", "create", "warm")
		if out := u.runIn(dir, "git", "push", app.GitURL, "main"); !strings.Contains(out, "cache: cold") {
			t.Errorf("first build:\n%s", out)
		}
		u.runIn(dir, "git", "commit", "-q", "--allow-empty", "-m", "again")
		if out := u.runIn(dir, "git", "push", app.GitURL, "main"); !strings.Contains(out, "cache: warm") {
			t.Errorf("second build did not find the cache:\n%s", out)
		}
		out := u.gantry("app", "purge-cache", "warm")
		m := regexp.MustCompile(`\(([0-9.]+) MiB\)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("purge-cache: %s", out)
		}
		if mib, _ := strconv.ParseFloat(m[1], 64); mib < 2 {
			t.Errorf("purge-cache freed %s MiB; want at least 2", m[1])
		}
		u.runIn(dir, "git", "commit", "-q", "--allow-empty", "-m", "cold again")
		if out := u.runIn(dir, "git", "push", app.GitURL, "main"); !strings.Contains(out, "cache: cold") {
			t.Errorf("the build after purge-cache:\n%s", out)
		}
	})
}
