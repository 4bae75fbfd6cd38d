package e2e

import (
	"archive/zip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAppsWithDependencies (namespaced): a Node.js app with npm
// dependencies (file: packages, so that no registry is needed) builds,
// has its devDependencies pruned and runs in production; a Python app
// with requirements (a local wheel) builds its venv and serves. Both say
// which runtime they run on.
func TestAppsWithDependencies(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node", "npm", "python3")
	srv, u := namespacedUser(t)
	hc := srv.httpClient()

	deploy := func(name string, files map[string]string) string {
		t.Helper()
		dir := filepath.Join(t.TempDir(), name)
		for p, body := range files {
			writeFile(t, filepath.Join(dir, p), body, 0o644)
		}
		u.runIn(dir, "git", "init", "-q", "-b", "main")
		u.runIn(dir, "git", "add", "-A")
		u.runIn(dir, "git", "commit", "-qm", name)
		var app appJSON
		u.gantryJSON(&app, "app", "create", name)
		out, err := u.exec(dir, "git", "push", app.GitURL, "main")
		if err != nil {
			t.Fatalf("push of %s: %v\n%s", name, err, out)
		}
		return out
	}

	t.Run("nodejs_npm_dependencies", func(t *testing.T) {
		out := deploy("shop", map[string]string{
			"package.json":                `{"name": "shop", "scripts": {"start": "node server.js"}, "dependencies": {"greet": "file:./vendor/greet"}, "devDependencies": {"devtool": "file:./vendor/devtool"}}`,
			"vendor/greet/package.json":   `{"name": "greet", "version": "1.0.0", "main": "index.js"}`,
			"vendor/greet/index.js":       `module.exports = (who) => "hello " + who;`,
			"vendor/devtool/package.json": `{"name": "devtool", "version": "1.0.0", "main": "index.js"}`,
			"vendor/devtool/index.js":     `module.exports = 1;`,
			"server.js": `const greet = require("greet");
let dev = "pruned"; try { require.resolve("devtool"); dev = "kept"; } catch (e) {}
require("http").createServer((req, res) => res.end(greet("shop") + " " + dev + " " + process.env.NODE_ENV + "\n")).listen(process.env.PORT, process.env.IP);`,
		})
		for _, want := range []string{"Node.js", "npm install", "npm prune --omit=dev"} {
			if !strings.Contains(out, want) {
				t.Errorf("push output lacks %q:\n%s", want, out)
			}
		}
		if body := mustGet(t, hc, srv.url("shop-acme.localhost", "/")); body != "hello shop pruned production\n" {
			t.Errorf("the Node.js app: %q", body)
		}
	})

	t.Run("python_requirements", func(t *testing.T) {
		wheel := filepath.Join(t.TempDir(), "greet-1.0-py3-none-any.whl")
		f, err := os.Create(wheel)
		if err != nil {
			t.Fatal(err)
		}
		z := zip.NewWriter(f)
		for name, body := range map[string]string{
			"greet.py":                     "def greet(who):\n    return 'hello ' + who\n",
			"greet-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n",
			"greet-1.0.dist-info/WHEEL":    "Wheel-Version: 1.0\nGenerator: gantry-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
			"greet-1.0.dist-info/RECORD":   "greet.py,,\ngreet-1.0.dist-info/METADATA,,\ngreet-1.0.dist-info/WHEEL,,\ngreet-1.0.dist-info/RECORD,,\n",
		} {
			w, _ := z.Create(name)
			w.Write([]byte(body))
		}
		z.Close()
		f.Close()
		whl, _ := os.ReadFile(wheel)
		out := deploy("api", map[string]string{
			"requirements.txt":                  "./vendor/greet-1.0-py3-none-any.whl\n",
			"vendor/greet-1.0-py3-none-any.whl": string(whl),
			"app.py": `import os, greet
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write((greet.greet("api") + "\n").encode())
HTTPServer((os.environ["IP"], int(os.environ["PORT"])), H).serve_forever()
`,
		})
		for _, want := range []string{"Python", "pip install"} {
			if !strings.Contains(out, want) {
				t.Errorf("push output lacks %q:\n%s", want, out)
			}
		}
		if body := mustGet(t, hc, srv.url("api-acme.localhost", "/")); body != "hello api\n" {
			t.Errorf("the Python app: %q", body)
		}
	})
}
