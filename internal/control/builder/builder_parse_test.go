package builder

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseProcfile(t *testing.T) {
	procs, err := ParseProcfile("# comment\n\nweb: node server.js --port $PORT\nworker:  python w.py\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{{"web", "node server.js --port $PORT"}, {"worker", "python w.py"}}
	if !reflect.DeepEqual(procs, want) {
		t.Errorf("got %v; want %v", procs, want)
	}
	web, err := Web(procs)
	if err != nil || web != "node server.js --port $PORT" {
		t.Errorf("Web: got %q, %v", web, err)
	}
}

func TestParseProcfileErrors(t *testing.T) {
	for name, in := range map[string]string{
		"no_colon":  "web node x",
		"bad_name":  "we b: x",
		"empty_cmd": "web:   ",
		"duplicate": "web: a\nweb: b",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseProcfile(in); err == nil {
				t.Errorf("ParseProcfile(%q) accepted", in)
			}
		})
	}
}

func TestWebMissing(t *testing.T) {
	procs, _ := ParseProcfile("worker: x")
	_, err := Web(procs)
	if err == nil || !strings.Contains(err.Error(), "no web:") {
		t.Errorf("got %v; want a no-web error", err)
	}
}

func FuzzParseProcfile(f *testing.F) {
	f.Add("web: node server.js\n")
	f.Add("a:b:c\n#x\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		procs, err := ParseProcfile(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range procs {
			if p.Command == "" || !procNameRE.MatchString(p.Name) || seen[p.Name] {
				t.Errorf("bad process %+v from %q", p, s)
			}
			seen[p.Name] = true
		}
	})
}

func FuzzSuggestHook(f *testing.F) {
	f.Add("pre-build")
	f.Add("deploy.sh")
	f.Fuzz(func(t *testing.T, s string) {
		if got := SuggestHook(s); got != "" && !KnownHooks[got] {
			t.Errorf("SuggestHook(%q) = %q, not a known hook", s, got)
		}
	})
}

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if (strings.Contains(name, "action_hooks/") || strings.Contains(name, "cron/")) && !strings.HasSuffix(name, ".noexec") {
			mode = 0o755
		}
		if err := os.WriteFile(strings.TrimSuffix(p, ".noexec"), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		files     map[string]string
		preferred string
		cart      string
		start     string
		steps     []string
		release   string
		procs     map[string]string
		err       string
	}{
		{name: "node_start_simple", files: map[string]string{"package.json": `{"scripts":{"start":"node s.js --port=1"}}`}, cart: NodeJS, start: `PATH="$PWD/node_modules/.bin:$PATH" exec node s.js --port=1`},
		{name: "node_start_shell", files: map[string]string{"package.json": `{"scripts":{"start":"npm run db && node s.js"}}`}, cart: NodeJS, start: `PATH="$PWD/node_modules/.bin:$PATH" exec sh -c 'npm run db && node s.js'`},
		{name: "node_deps_lock", files: map[string]string{"package.json": `{"dependencies":{"x":"1"}}`, "package-lock.json": "{}", "server.js": ""}, cart: NodeJS, start: "exec node server.js", steps: []string{"npm ci"}},
		{name: "node_deps_build", files: map[string]string{"package.json": `{"main":"m.js","dependencies":{"x":"1"},"scripts":{"build":"tsc"}}`, "m.js": ""}, cart: NodeJS, start: "exec node 'm.js'", steps: []string{"npm install", "npm run build"}},
		{name: "node_dev_deps_pruned", files: map[string]string{"package.json": `{"dependencies":{"x":"1"},"devDependencies":{"ts":"5"},"scripts":{"build":"tsc"}}`, "server.js": ""}, cart: NodeJS, start: "exec node server.js", steps: []string{"npm install", "npm run build", "npm prune --omit=dev"}},
		{name: "node_bad_json", files: map[string]string{"package.json": `{`}, err: "not valid JSON"},
		{name: "python_app", files: map[string]string{"app.py": ""}, cart: Python, start: "exec python3 app.py"},
		{name: "python_reqs", files: map[string]string{"app.py": "", "requirements.txt": "# none\nflask\n"}, cart: Python, start: "exec ./.venv/bin/python3 app.py", steps: []string{"python venv", "pip install"}},
		{name: "go", files: map[string]string{"go.mod": "module x"}, cart: Go, start: "exec ./.gantry/bin/web", steps: []string{"go build"}},
		{name: "static", files: map[string]string{"index.html": ""}, cart: Static, start: "exec serve"},
		{name: "procfile_overrides", files: map[string]string{"app.py": "", "Procfile": "web: gunicorn app"}, cart: Python, start: "gunicorn app"},
		{name: "procfile_only", files: map[string]string{"Procfile": "web: ./run"}, cart: Procfile, start: "./run"},
		{name: "procfile_release", files: map[string]string{"app.py": "", "Procfile": "web: gunicorn app\nrelease: python manage.py migrate"}, cart: Python, start: "gunicorn app", release: "python manage.py migrate"},
		{name: "procfile_workers", files: map[string]string{"Procfile": "web: ./web\nworker: ./work --queue a\nclock: ./tick\nrelease: ./migrate"}, cart: Procfile, start: "./web", release: "./migrate",
			procs: map[string]string{"worker": "./work --queue a", "clock": "./tick"}},
		{name: "procfile_reserved_run", files: map[string]string{"Procfile": "web: ./web\nrun: ./x"}, err: `the process name "run" is taken by one-off runs`},
		{name: "procfile_reserved_cron", files: map[string]string{"Procfile": "web: ./web\nCron: ./x"}, err: `the process name "Cron" is taken by scheduled jobs`},
		{name: "procfile_too_many_types", files: map[string]string{"Procfile": "web: ./web\nw1: x\nw2: x\nw3: x\nw4: x\nw5: x\nw6: x\nw7: x\nw8: x\nw9: x\nw10: x\nw11: x\n"}, err: "more than 10 process types"},
		{name: "procfile_without_web", files: map[string]string{"app.py": "", "Procfile": "worker: x"}, err: "no web:"},
		{name: "preferred_wins", files: map[string]string{"index.html": "", "app.py": ""}, preferred: Static, cart: Static, start: "exec serve"},
		{name: "nothing", files: map[string]string{"README": ""}, err: "could not tell"},
		{name: "node_no_start", files: map[string]string{"package.json": `{}`}, err: "no start command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, tc.files)
			p, err := Detect(dir, tc.preferred, "serve")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v; want error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var steps []string
			for _, s := range p.Steps {
				steps = append(steps, s.Title)
			}
			if len(p.Processes)+len(tc.procs) > 0 && !reflect.DeepEqual(p.Processes, tc.procs) {
				t.Errorf("processes %v; want %v", p.Processes, tc.procs)
			}
			if p.Release != tc.release {
				t.Errorf("release %q; want %q", p.Release, tc.release)
			}
			if p.Type != tc.cart || p.Start != tc.start || !reflect.DeepEqual(steps, tc.steps) {
				t.Errorf("got %s %q %v; want %s %q %v", p.Type, p.Start, steps, tc.cart, tc.start, tc.steps)
			}
		})
	}
}

func TestFindHooks(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		".gantry/action_hooks/build":     "#!/bin/sh\n",
		".gantry/action_hooks/pre-build": "#!/bin/sh\n",
		".gantry/action_hooks/README":    "",
		".openshift/action_hooks/deploy": "#!/bin/sh\n",
	})
	h, err := FindHooks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h.Dir != ".gantry/action_hooks" || len(h.Paths) != 1 || h.Paths["build"] == "" {
		t.Errorf("got dir %q hooks %v; want only .gantry's build", h.Dir, h.Paths)
	}
	if len(h.Warnings) != 2 || !strings.Contains(h.Warnings[0], "did you mean pre_build") || !strings.Contains(h.Warnings[1], "the hooks in .openshift/action_hooks do not run") {
		t.Errorf("warnings: got %q", h.Warnings)
	}
}

// The starter code's .gantry/action_hooks holds only a README: an
// .openshift/action_hooks pushed later is used.
func TestFindHooksReadmeOnlyGivesWay(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{".gantry/action_hooks/README.md": "hooks go here", ".openshift/action_hooks/deploy": "#!/bin/sh\n"})
	h, err := FindHooks(dir)
	if err != nil || h.Dir != ".openshift/action_hooks" || h.Paths["deploy"] == "" || len(h.Warnings) != 0 {
		t.Errorf("got %+v, %v; want the .openshift deploy hook", h, err)
	}
}

func TestFindHooksOpenShiftFallback(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{".openshift/action_hooks/deploy": "#!/bin/sh\n"})
	h, err := FindHooks(dir)
	if err != nil || h.Paths["deploy"] == "" {
		t.Errorf("got %v, %v; want the .openshift deploy hook", h, err)
	}
}

func TestFindHooksNotExecutable(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{".gantry/action_hooks/deploy.noexec": "#!/bin/sh\n"})
	_, err := FindHooks(dir)
	if err == nil || !strings.Contains(err.Error(), "chmod +x") {
		t.Errorf("got %v; want a not-executable error that says chmod +x", err)
	}
}

// What version a tree asks for, in each ecosystem's own place.
func TestDetectVersionWanted(t *testing.T) {
	for _, tc := range []struct {
		name       string
		files      map[string]string
		constraint string
	}{
		{"node_engines", map[string]string{"package.json": `{"engines":{"node":">=20 <23"},"scripts":{"start":"node s.js"}}`}, ">=20 <23"},
		{"node_none", map[string]string{"package.json": `{"scripts":{"start":"node s.js"}}`}, ""},
		{"python_version_file", map[string]string{"app.py": "", ".python-version": "3.11\n"}, "3.11"},
		{"python_runtime_txt", map[string]string{"app.py": "", "runtime.txt": "python-3.12.1\n"}, "3.12.1"},
		{"go_line", map[string]string{"go.mod": "module x\n\ngo 1.25\n"}, "1.25"},
		{"go_toolchain_wins", map[string]string{"go.mod": "module x\n\ngo 1.24\n\ntoolchain go1.26.1\n"}, "1.26.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, tc.files)
			p, err := Detect(dir, "", "serve")
			if err != nil {
				t.Fatal(err)
			}
			if p.Want == nil || p.Want.Constraint != tc.constraint {
				t.Errorf("want %+v; constraint %q", p.Want, tc.constraint)
			}
		})
	}
}
