package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeployAnyRepo: a user brings an existing repository with its own
// history. An app made without --type is empty and its first push deploys;
// a forced push deploys and says history was replaced; --from-code makes
// an app from a directory or from a URL in one command. Namespaced as
// root, plain processes otherwise.
func TestDeployAnyRepo(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	srv, u := namespacedUser(t)
	hc := srv.httpClient()

	// An existing project: two commits of its own, nothing from Gantry.
	src := filepath.Join(t.TempDir(), "chat")
	os.MkdirAll(src, 0o755)
	u.runIn(src, "git", "init", "-q", "-b", "main")
	writeFile(t, filepath.Join(src, "package.json"), `{"name": "chat", "scripts": {"start": "node server.js"}}`, 0o644)
	writeFile(t, filepath.Join(src, "server.js"), nodeApp("chat-1"), 0o644)
	u.runIn(src, "git", "add", "-A")
	u.runIn(src, "git", "commit", "-qm", "first")
	writeFile(t, filepath.Join(src, "server.js"), nodeApp("chat-2"), 0o644)
	u.runIn(src, "git", "commit", "-qam", "second")

	t.Run("empty_app_then_first_push", func(t *testing.T) {
		var app appJSON
		u.gantryJSON(&app, "app", "create", "sio")
		if app.State != "not_deployed" || app.Type != "" || len(app.Gears) != 0 {
			t.Fatalf("an app without --type: %+v; want empty, not deployed", app)
		}
		human := u.gantry("app", "show", "sio")
		if !strings.Contains(human, "sio") {
			t.Errorf("app show: %s", human)
		}
		out := u.runIn(src, "git", "push", app.GitURL, "main")
		if !strings.Contains(out, "nodejs app detected") {
			t.Errorf("first push of an existing repository:\n%s", out)
		}
		if code, body := get(t, hc, srv.url("sio-acme.localhost", "/")); code != 200 || body != "chat-2 \n" {
			t.Fatalf("after the first push: %d %q", code, body)
		}

		// Rewrite history and force it: deployed, said, earlier deployments kept.
		writeFile(t, filepath.Join(src, "server.js"), nodeApp("chat-3"), 0o644)
		u.runIn(src, "git", "commit", "-q", "--amend", "-am", "second, rewritten")
		out, err := u.exec(src, "git", "push", "--force", app.GitURL, "main")
		if err != nil || !strings.Contains(out, "history of main was replaced") {
			t.Fatalf("forced push: %v\n%s", err, out)
		}
		if code, body := get(t, hc, srv.url("sio-acme.localhost", "/")); code != 200 || body != "chat-3 \n" {
			t.Fatalf("after the forced push: %d %q", code, body)
		}
		var deps []deploymentJSON
		u.gantryJSON(&deps, "deployment", "list", "sio")
		if len(deps) != 2 || !deps[0].Active {
			t.Fatalf("deployments after two pushes: %+v", deps)
		}
		// Roll back to the deployment from before the forced push.
		u.gantry("deployment", "activate", "sio", deps[1].ID)
		if body := mustGet(t, hc, srv.url("sio-acme.localhost", "/")); body != "chat-2 \n" {
			t.Errorf("rolled back across the forced push: %q", body)
		}
	})

	t.Run("from_code_directory", func(t *testing.T) {
		var app appJSON
		u.gantryJSON(&app, "app", "create", "sio2", "--from-code", src)
		if app.State != "running" || len(app.Gears) != 1 || !strings.HasPrefix(app.Gears[0].IP, "10.232.") || app.Gears[0].Port != 8080 {
			t.Fatalf("--from-code DIR: %+v; want one running gear with its own address in the namespaced gear subnet", app)
		}
		if body := mustGet(t, hc, srv.url("sio2-acme.localhost", "/")); body != "chat-3 \n" {
			t.Errorf("--from-code DIR serves %q", body)
		}
	})

	t.Run("from_code_url", func(t *testing.T) {
		out := u.gantry("app", "create", "sio3", "--from-code", "file://"+src)
		if !strings.Contains(out, "Cloning file://") || !strings.Contains(out, "nodejs app detected") {
			t.Errorf("--from-code URL output:\n%s", out)
		}
		if body := mustGet(t, hc, srv.url("sio3-acme.localhost", "/")); body != "chat-3 \n" {
			t.Errorf("--from-code URL serves %q", body)
		}
	})

	t.Run("bad_input", func(t *testing.T) {
		if out := u.gantryFails("app", "create", "x1", "--type", "nodejs", "--from-code", src); !strings.Contains(out, "not several") {
			t.Errorf("--type with --from-code: %s", out)
		}
		if out := u.gantryFails("app", "create", "x1", "--type", "nodejs", "--image", "registry.example.com/a:1"); !strings.Contains(out, "not several") {
			t.Errorf("--type with --image: %s", out)
		}
		empty := t.TempDir()
		if out := u.gantryFails("app", "create", "x2", "--from-code", empty); !strings.Contains(out, "not a git repository with a commit") {
			t.Errorf("--from-code of a directory without git: %s", out)
		}
		if out := u.gantryFails("app", "create", "x3", "--from-code", "file:///nonexistent/repo"); !strings.Contains(out, "cloning") {
			t.Errorf("--from-code of a URL that does not exist: %s", out)
		}
		for _, name := range []string{"x1", "x2", "x3"} {
			if out, err := u.exec("", gantryBin, "app", "show", name); err == nil {
				t.Errorf("a refused create left app %s behind:\n%s", name, out)
			}
		}
	})
}
