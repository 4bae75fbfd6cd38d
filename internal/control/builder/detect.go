package builder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/gantry-paas/gantry/internal/node/runtimes"
)

// App types: what builds and runs an app's web process (OpenShift's web
// cartridges; "cartridge" in Gantry's code means an add-on service).
const (
	NodeJS   = "nodejs"
	Python   = "python"
	Go       = "go"
	Static   = "static"
	Procfile = "procfile" // no build: only a Procfile
	// Dockerfile: built by buildah into an image, run as image deploys
	// are (a tree with only a Dockerfile, or .gantry/build saying so).
	Dockerfile = "dockerfile"
)

// MaxProcessTypes bounds a Procfile's process types besides web and
// release (each starts a gear).
const MaxProcessTypes = 10

// Types are the app types a user may choose at app creation.
var Types = []string{NodeJS, Python, Go, Static}

// Step is one build command, run in the source tree.
type Step struct {
	Title string
	Args  []string
}

// Plan is what the builder does with a source tree: build steps, then the
// command that starts the web process (run with sh -c).
type Plan struct {
	Type  string
	Steps []Step
	Start string
	// Release is the Procfile's release command: run once per deployment,
	// after the build and before any gear switches (migrations).
	Release string
	// Processes are the Procfile's other process types (workers): name to
	// command.
	Processes map[string]string
	Notes     []string
	// Want is the language version the tree asks for (nil: a type without
	// versions, static or Procfile).
	Want *runtimes.Want
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
// app's type: when the tree matches several types, it wins.
// staticServer is the command that serves a directory (Gantry's own).
func Detect(dir, preferred, staticServer string) (*Plan, error) {
	t, err := openTree(dir)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var found []string
	for _, m := range markers {
		for _, f := range m.files {
			ok, err := t.present(f)
			if err != nil {
				return nil, err
			}
			if ok {
				found = append(found, m.cart)
				break
			}
		}
	}
	procs, hasProcfile, err := readProcfile(t)
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
	if want, err := t.readFile(".gantry/build"); err == nil && strings.TrimSpace(strings.ToLower(string(want))) == Dockerfile {
		cart = Dockerfile
	} else if ok, err := t.present("Dockerfile"); err != nil {
		return nil, err
	} else if ok && cart == "" {
		cart = Dockerfile
	}
	if cart == Dockerfile {
		if ok, err := t.present("Dockerfile"); err != nil || !ok {
			return nil, fmt.Errorf(".gantry/build asks for a Dockerfile build, and the tree has no Dockerfile at its top")
		}
		return &Plan{Type: Dockerfile}, nil
	}
	var p *Plan
	switch cart {
	case NodeJS:
		p, err = planNode(t)
	case Python:
		p, err = planPython(t)
	case Go:
		p = &Plan{Type: Go, Steps: []Step{{"go build", []string{"go", "build", "-o", ".gantry/bin/web", "."}}}, Start: "exec ./.gantry/bin/web",
			Want: goWant(t)}
	case Static:
		p = &Plan{Type: Static, Start: "exec " + staticServer}
	case Procfile:
		p = &Plan{Type: Procfile}
	default:
		return nil, errors.New("could not tell what kind of app this is: add package.json (Node.js), requirements.txt or app.py (Python), go.mod (Go), index.html (static site), a Procfile with a web: line, or a Dockerfile")
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
			if pr.Name == "release" {
				p.Release = pr.Command
				continue
			}
			if pr.Name != "web" {
				if p.Processes == nil {
					p.Processes = map[string]string{}
				}
				p.Processes[pr.Name] = pr.Command
				if len(p.Processes) > MaxProcessTypes {
					return nil, fmt.Errorf("the Procfile has more than %d process types besides web and release: run several jobs in one worker process", MaxProcessTypes)
				}
			}
		}
	}
	if p.Start == "" {
		return nil, fmt.Errorf("no start command for this %s app: add a Procfile with a web: line", cart)
	}
	return p, nil
}

func readProcfile(t *tree) ([]Process, bool, error) {
	data, err := t.readFile("Procfile")
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	procs, err := ParseProcfile(string(data))
	return procs, true, err
}

type packageJSON struct {
	Engines         map[string]string `json:"engines"`
	Main            string            `json:"main"`
	Scripts         map[string]string `json:"scripts"`
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
}

func planNode(t *tree) (*Plan, error) {
	data, err := t.readFile("package.json")
	if err != nil {
		return nil, err
	}
	var pkg packageJSON
	if err := json.Unmarshal(data, &pkg); err != nil {
		return nil, fmt.Errorf("package.json is not valid JSON: %v", jsonErrorAt(err))
	}
	p := &Plan{Type: NodeJS, Want: &runtimes.Want{Lang: runtimes.Node}}
	if e := strings.TrimSpace(pkg.Engines["node"]); e != "" {
		p.Want.Constraint, p.Want.From = e, fmt.Sprintf("engines: %q", e)
	}
	if len(pkg.Dependencies)+len(pkg.DevDependencies) > 0 {
		if t.exists("package-lock.json") || t.exists("npm-shrinkwrap.json") {
			p.Steps = append(p.Steps, Step{"npm ci", []string{"npm", "ci", "--no-audit", "--no-fund"}})
		} else {
			p.Steps = append(p.Steps, Step{"npm install", []string{"npm", "install", "--no-audit", "--no-fund"}})
		}
	}
	if pkg.Scripts["build"] != "" {
		p.Steps = append(p.Steps, Step{"npm run build", []string{"npm", "run", "build"}})
	}
	if len(pkg.DevDependencies) > 0 { // as Heroku does: what the build needed, the app does not
		p.Steps = append(p.Steps, Step{"npm prune --omit=dev", []string{"npm", "prune", "--omit=dev", "--no-audit", "--no-fund"}})
	}
	// The start script runs directly, not through `npm start`: one process
	// fewer, signals reach the app, and it starts faster.
	switch {
	case simpleCommand(pkg.Scripts["start"]):
		p.Start = "PATH=\"$PWD/node_modules/.bin:$PATH\" exec " + pkg.Scripts["start"]
	case pkg.Scripts["start"] != "":
		p.Start = "PATH=\"$PWD/node_modules/.bin:$PATH\" exec sh -c " + shellQuote(pkg.Scripts["start"])
	case pkg.Main != "" && t.exists(pkg.Main):
		p.Start = "exec node " + shellQuote(pkg.Main)
	default:
		for _, f := range []string{"server.js", "index.js", "app.js", "main.js"} {
			if t.exists(f) {
				p.Start = "exec node " + f
				break
			}
		}
	}
	return p, nil
}

func planPython(t *tree) (*Plan, error) {
	p := &Plan{Type: Python, Want: &runtimes.Want{Lang: runtimes.Python}}
	if data, err := t.readFile(".python-version"); err == nil {
		if v := strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]); v != "" {
			p.Want.Constraint, p.Want.From = v, ".python-version: "+v
		}
	} else if data, err := t.readFile("runtime.txt"); err == nil {
		if v := strings.TrimPrefix(strings.TrimSpace(string(data)), "python-"); v != "" {
			p.Want.Constraint, p.Want.From = v, "runtime.txt: python-"+v
		}
	}
	reqs, err := requirements(t)
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
	case t.exists("app.py"):
		p.Start = "exec " + py + " app.py"
	case t.exists("wsgi.py"):
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

func requirements(t *tree) ([]string, error) {
	data, err := t.readFile("requirements.txt")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
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

// jsonErrorAt says where a JSON document is wrong without quoting it.
func jsonErrorAt(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s should be %s, at byte %d", te.Field, te.Type, te.Offset)
	}
	return "it cannot be read"
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

var goLine = regexp.MustCompile(`(?m)^(go|toolchain)\s+(go)?([0-9][0-9.]*)\s*$`)

// goWant reads go.mod's go line (the least Go the module builds with),
// or its toolchain line, which names a newer one.
func goWant(t *tree) *runtimes.Want {
	w := &runtimes.Want{Lang: runtimes.Go}
	data, err := t.readFile("go.mod")
	if err != nil {
		return w
	}
	for _, m := range goLine.FindAllStringSubmatch(string(data), -1) {
		if w.Constraint == "" || m[1] == "toolchain" {
			w.Constraint, w.From = m[3], "go.mod: "+m[1]+" "+m[2]+m[3]
		}
	}
	return w
}
