package builder

import (
	"fmt"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/gitrepo"
)

const hooksReadme = `Action hooks
============

Executable files here run at each step of a deploy, in this order:

  pre_build    before the cartridge builds the app (npm install, go build...)
  build        after the cartridge build
  deploy       after the build, before the new gears start
  post_deploy  after the new gears serve traffic

and around each gear's start and stop: pre_start, post_start, pre_stop,
post_stop. They run in the deployment directory with the app's environment
($GANTRY_DATA_DIR, $GANTRY_REPO_DIR, your own variables...). A hook that
fails stops the deploy and the running app stays as it was.

Remember to make hooks executable: chmod +x .gantry/action_hooks/deploy
(.openshift/action_hooks/ is read too, for apps coming from OpenShift.)
`

// Starter returns the files of a new app's first commit for its type.
func Starter(appType, app string) (map[string]gitrepo.File, error) {
	files := map[string]gitrepo.File{".gantry/action_hooks/README.md": {Body: hooksReadme}}
	page := func(lang string) string {
		return fmt.Sprintf("<!doctype html><title>%s</title><h1>Welcome to %s</h1><p>This %s app runs on Gantry. Edit it, commit, and <code>git push</code>.</p>", app, app, lang)
	}
	switch appType {
	case NodeJS:
		files["package.json"] = gitrepo.File{Body: fmt.Sprintf(`{
  "name": %q,
  "version": "1.0.0",
  "private": true,
  "scripts": { "start": "node server.js" },
  "engines": { "node": ">=18" }
}
`, app)}
		files["server.js"] = gitrepo.File{Body: `const http = require("http");

const port = process.env.PORT || 8080;
const host = process.env.IP || "0.0.0.0";

http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(` + "`" + page("Node.js") + "`" + `);
}).listen(port, host, () => console.log("listening on " + host + ":" + port));
`}
	case Python:
		files["app.py"] = gitrepo.File{Body: `import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""` + page("Python") + `"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)


if __name__ == "__main__":
    addr = (os.environ.get("IP", "0.0.0.0"), int(os.environ.get("PORT", "8080")))
    print("listening on %s:%d" % addr, flush=True)
    ThreadingHTTPServer(addr, Handler).serve_forever()
`}
	case Go:
		files["go.mod"] = gitrepo.File{Body: "module " + app + "\n\ngo 1.22\n"}
		files["main.go"] = gitrepo.File{Body: `package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	addr := net.JoinHostPort(os.Getenv("IP"), os.Getenv("PORT"))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, ` + "`" + page("Go") + "`" + `)
	})
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
`}
	case Static:
		files["index.html"] = gitrepo.File{Body: page("static") + "\n"}
	default:
		return nil, fmt.Errorf("unknown app type %q: choose one of %s", appType, strings.Join(Types, ", "))
	}
	return files, nil
}
