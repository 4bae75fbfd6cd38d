package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRuntimeVersions (namespaced): the runtimes directory holds two
// Node.js trees (shims that report their version and mark the process,
// then run the host's node); an app's engines range picks one, the push
// says which, the gear runs on it; a range nothing satisfies is refused
// with the list, and a tree without a binary is reported.
func TestRuntimeVersions(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	isolation := isolationArgs(t, "auto")
	node, _ := exec.LookPath("node")
	root := t.TempDir()
	os.Chmod(root, 0o755)
	os.Chmod(filepath.Dir(root), 0o755) // gears (the app's user) traverse to the trees
	rtDir := filepath.Join(root, "runtimes")
	for _, v := range [][2]string{{"node-18", "v18.19.0"}, {"node-22", "v22.4.1"}} {
		mark := strings.TrimPrefix(v[0], "node-")
		writeFile(t, filepath.Join(rtDir, v[0], "bin", "node"), "#!/bin/sh\nif [ \"$1\" = --version ]; then echo "+v[1]+"; exit 0; fi\nexport RUNTIME_MARK="+mark+"\nexec "+node+" \"$@\"\n", 0o755)
	}
	os.MkdirAll(filepath.Join(rtDir, "node-20", "bin"), 0o755) // no binary: reported, not used
	filepath.Walk(rtDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", append(isolation, "--runtimes", rtDir)...)
	u := newEnv(t, cfg)
	hc := srv.httpClient()
	u.gantry("sshkey", "add", filepath.Join(u.home, ".ssh", "id_ed25519.pub"))
	u.gantry("domain", "create", "acme")

	list := u.gantry("runtimes")
	for _, want := range []string{"18.19.0", "node-18", "22.4.1", "node-22", "host", "node-20 has no working node"} {
		if !strings.Contains(list, want) {
			t.Errorf("gantry runtimes lacks %q:\n%s", want, list)
		}
	}

	push := func(name, engines string) (string, error) {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dir, 0o755)
		u.runIn(dir, "git", "init", "-q", "-b", "main")
		writeFile(t, filepath.Join(dir, "package.json"), `{"name": "`+name+`", "engines": {"node": "`+engines+`"}, "scripts": {"start": "node server.js"}}`, 0o644)
		writeFile(t, filepath.Join(dir, "server.js"), nodeApp(name), 0o644)
		u.runIn(dir, "git", "add", "-A")
		u.runIn(dir, "git", "commit", "-qm", name)
		var app appJSON
		u.gantryJSON(&app, "app", "create", name)
		return u.exec(dir, "git", "push", app.GitURL, "main")
	}
	for _, tc := range []struct{ name, engines, said, mark string }{
		{"modern", ">=20", `Node.js 22.4.1 (engines: ">=20"; node-22)`, "22"},
		{"legacy", "^18.2", `Node.js 18.19.0 (engines: "^18.2"; node-18)`, "18"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := push(tc.name, tc.engines)
			if err != nil || !strings.Contains(out, tc.said) {
				t.Fatalf("push: %v; want %q in:\n%s", err, tc.said, out)
			}
			if mark := mustGet(t, hc, srv.url(tc.name+"-acme.localhost", "/env/RUNTIME_MARK")); mark != tc.mark {
				t.Errorf("the gear runs on %q; want the node-%s tree", mark, tc.mark)
			}
			var deps []struct {
				Runtime string `json:"runtime"`
			}
			u.gantryJSON(&deps, "deployment", "list", tc.name)
			if len(deps) != 1 || !strings.HasPrefix(deps[0].Runtime, "Node.js "+tc.mark+".") {
				t.Errorf("deployment list: %+v", deps)
			}
		})
	}
	t.Run("none_matches", func(t *testing.T) {
		out, err := push("future", ">=30")
		if err == nil || !strings.Contains(out, `no nodejs satisfies engines: ">=30"`) || !strings.Contains(out, "22.4.1 (node-22)") || !strings.Contains(out, "18.19.0 (node-18)") {
			t.Fatalf("an engines range nothing satisfies: %v\n%s", err, out)
		}
	})
}
