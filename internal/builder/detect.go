package builder

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Cartridges that build and run an app's web process.
const (
	NodeJS   = "nodejs"
	Python   = "python"
	Go       = "go"
	Static   = "static"
	Procfile = "procfile" // no build: only a Procfile
)

// Types are the cartridge types a user may choose at app creation.
var Types = []string{NodeJS, Python, Go, Static}

// Step is one build command, run in the source tree.
type Step struct {
	Title string
	Args  []string
}

// Plan is what the builder does with a source tree: build steps, then the
// command that starts the web process (run with sh -c).
type Plan struct {
	Cartridge string
	Steps     []Step
	Start     string
	Notes     []string
}

var markers = []struct {
	cart  string
	files []string
}{
	{NodeJS, []string{"package.json"}},
	{Go, []string{"go.mod"}},
	{Python, []string{"requirements.txt", "pyproject.toml", "setup.py", "app.py", "wsgi.py"}},
	{Static, []string{"index.html"}},
}

// Detect decides how to build and start the tree in dir. preferred is the
// app's type: when the tree matches several cartridges, it wins.
// staticServer is the command that serves a directory (Gantry's own).
func Detect(dir, preferred, staticServer string) (*Plan, error) {
	var found []string
	for _, m := range markers {
		for _, f := range m.files {
			if exists(filepath.Join(dir, f)) {
				found = append(found, m.cart)
				break
			}
		}
	}
	procs, hasProcfile, err := readProcfile(dir)
	if err != nil {
		return nil, err
	}
	cart := ""
	for _, c := range found {
		if c == preferred {
			cart = c
		}
	}
	if cart == "" && len(found) > 0 {
		cart = found[0]
	}
	if cart == "" && hasProcfile {
		cart = Procfile
	}
	var p *Plan
	switch cart {
	case NodeJS:
		p, err = planNode(dir)
	case Python:
		p, err = planPython(dir)
	case Go:
		p = &Plan{Cartridge: Go, Steps: []Step{{"go build", []string{"go", "build", "-o", ".gantry/bin/web", "."}}}, Start: "exec ./.gantry/bin/web"}
	case Static:
		p = &Plan{Cartridge: Static, Start: "exec " + staticServer}
	case Procfile:
		p = &Plan{Cartridge: Procfile}
	default:
		return nil, errors.New("could not tell what kind of app this is: add package.json (Node.js), requirements.txt or app.py (Python), go.mod (Go), index.html (static site), or a Procfile with a web: line")
	}
	if err != nil {
		return nil, err
	}
	if preferred != "" && cart != preferred {
		p.Notes = append(p.Notes, fmt.Sprintf("the app was created as %s, but this tree is built as %s", preferred, cart))
	}
	if hasProcfile {
		web, err := Web(procs)
		if err != nil {
			return nil, err
		}
		p.Start = web
		for _, pr := range procs {
			if pr.Name != "web" {
				p.Notes = append(p.Notes, fmt.Sprintf("Procfile process %q is not run: only web processes run in this version", pr.Name))
			}
		}
	}
	if p.Start == "" {
		return nil, fmt.Errorf("no start command for this %s app: add a Procfile with a web: line", cart)
	}
	return p, nil
}

func readProcfile(dir string) ([]Process, bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "Procfile"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading Procfile: %w", err)
	}
	procs, err := ParseProcfile(string(data))
	return procs, true, err
}

type packageJSON struct {
	Main            string            `json:"main"`
	Scripts         map[string]string `json:"scripts"`
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
}

func planNode(dir string) (*Plan, error) {
	data, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return nil, fmt.Errorf("reading package.json: %w", err)
	}
	var pkg packageJSON
	if err := json.Unmarshal(data, &pkg); err != nil {
		return nil, fmt.Errorf("package.json is not valid JSON: %w", err)
	}
	p := &Plan{Cartridge: NodeJS}
	if len(pkg.Dependencies)+len(pkg.DevDependencies) > 0 {
		if exists(filepath.Join(dir, "package-lock.json")) || exists(filepath.Join(dir, "npm-shrinkwrap.json")) {
			p.Steps = append(p.Steps, Step{"npm ci", []string{"npm", "ci", "--no-audit", "--no-fund"}})
		} else {
			p.Steps = append(p.Steps, Step{"npm install", []string{"npm", "install", "--no-audit", "--no-fund"}})
		}
	}
	if pkg.Scripts["build"] != "" {
		p.Steps = append(p.Steps, Step{"npm run build", []string{"npm", "run", "build"}})
	}
	// The start script runs directly, not through `npm start`: one process
	// fewer, signals reach the app, and it starts faster.
	switch {
	case simpleCommand(pkg.Scripts["start"]):
		p.Start = "PATH=\"$PWD/node_modules/.bin:$PATH\" exec " + pkg.Scripts["start"]
	case pkg.Scripts["start"] != "":
		p.Start = "PATH=\"$PWD/node_modules/.bin:$PATH\" exec sh -c " + shellQuote(pkg.Scripts["start"])
	case pkg.Main != "" && exists(filepath.Join(dir, pkg.Main)):
		p.Start = "exec node " + shellQuote(pkg.Main)
	default:
		for _, f := range []string{"server.js", "index.js", "app.js", "main.js"} {
			if exists(filepath.Join(dir, f)) {
				p.Start = "exec node " + f
				break
			}
		}
	}
	return p, nil
}

func planPython(dir string) (*Plan, error) {
	p := &Plan{Cartridge: Python}
	reqs, err := requirements(filepath.Join(dir, "requirements.txt"))
	if err != nil {
		return nil, err
	}
	if len(reqs) > 0 {
		p.Steps = append(p.Steps,
			Step{"python venv", []string{"python3", "-m", "venv", ".venv"}},
			Step{"pip install", []string{".venv/bin/pip", "install", "--disable-pip-version-check", "-r", "requirements.txt"}})
	}
	py := "python3"
	if len(reqs) > 0 {
		py = "./.venv/bin/python3"
	}
	switch {
	case exists(filepath.Join(dir, "app.py")):
		p.Start = "exec " + py + " app.py"
	case exists(filepath.Join(dir, "wsgi.py")):
		p.Start = "exec " + py + " -c " + shellQuote(wsgiRunner)
	}
	return p, nil
}

// wsgiRunner serves wsgi.py's `application` with the standard library, one
// thread per request, on $PORT.
const wsgiRunner = `import os, sys, socketserver, wsgiref.simple_server as w
sys.path.insert(0, os.getcwd())
from wsgi import application
class S(socketserver.ThreadingMixIn, w.WSGIServer): daemon_threads = True
w.make_server(os.environ.get("GANTRY_GEAR_IP", "0.0.0.0"), int(os.environ["PORT"]), application, server_class=S).serve_forever()`

func requirements(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading requirements.txt: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

var simpleRE = regexp.MustCompile(`^[A-Za-z0-9_./=:@%+-]+( +[A-Za-z0-9_./=:@%+-]+)*$`)

// simpleCommand reports whether s is words without shell syntax, so that it
// can be exec'd directly (the app then gets signals itself).
func simpleCommand(s string) bool { return simpleRE.MatchString(s) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
