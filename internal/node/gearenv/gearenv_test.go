package gearenv

import (
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	env := Build(Params{
		App: "blog", Domain: "acme", AppID: "a1", Host: "blog-acme.localhost",
		Type: "nodejs", GearID: "g1", IP: "127.0.0.1", Port: 20001,
		DataDir: "/d/data", RepoDir: "/d/repo", LogDir: "/d/logs", TmpDir: "/d/tmp", HomeDir: "/d",
		PathPrefix: []string{"/d/repo/node_modules/.bin"}, BasePath: "/usr/bin:/bin",
		User: map[string]string{"GREETING": "hi", "PORT": "1"},
	})
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, want := range map[string]string{
		"PORT":                  "20001",
		"GREETING":              "hi",
		"GANTRY_APP_NAME":       "blog",
		"GANTRY_APP_DNS":        "blog-acme.localhost",
		"GANTRY_DATA_DIR":       "/d/data",
		"GANTRY_REPO_DIR":       "/d/repo",
		"GANTRY_GEAR_ID":        "g1",
		"GANTRY_NODEJS_IP":      "127.0.0.1",
		"GANTRY_NODEJS_PORT":    "20001",
		"OPENSHIFT_APP_DNS":     "blog-acme.localhost",
		"OPENSHIFT_DATA_DIR":    "/d/data/",
		"OPENSHIFT_REPO_DIR":    "/d/repo/",
		"OPENSHIFT_NODEJS_IP":   "127.0.0.1",
		"OPENSHIFT_NODEJS_PORT": "20001",
		"OPENSHIFT_NAMESPACE":   "acme",
		"PATH":                  "/d/repo/node_modules/.bin:/usr/bin:/bin",
	} {
		if got[k] != want {
			t.Errorf("%s: got %q; want %q", k, got[k], want)
		}
	}
	for i := 1; i < len(env); i++ {
		if env[i-1] > env[i] {
			t.Fatalf("env not sorted at %d: %q > %q", i, env[i-1], env[i])
		}
	}
}

func TestBuildWithoutPortHasNoPortVars(t *testing.T) {
	env := strings.Join(Build(Params{App: "a", Type: "go", GearID: "build"}), "\n")
	for _, k := range []string{"PORT=", "GANTRY_GO_PORT=", "OPENSHIFT_GO_IP="} {
		if strings.Contains(env, "\n"+k) || strings.HasPrefix(env, k) {
			t.Errorf("build env has %s", k)
		}
	}
}

// A Node.js gear runs with NODE_ENV=production unless the app sets it; its
// build does not get it (devDependencies install).
func TestNodeEnvProduction(t *testing.T) {
	has := func(env []string, kv string) bool {
		for _, e := range env {
			if e == kv {
				return true
			}
		}
		return false
	}
	gear := Build(Params{App: "a", Type: "nodejs", GearID: "g1", IP: "127.0.0.1", Port: 8080})
	own := Build(Params{App: "a", Type: "nodejs", GearID: "g1", IP: "127.0.0.1", Port: 8080, User: map[string]string{"NODE_ENV": "staging"}})
	build := Build(Params{App: "a", Type: "nodejs", GearID: "build"})
	py := Build(Params{App: "a", Type: "python", GearID: "g1", IP: "127.0.0.1", Port: 8080})
	if !has(gear, "NODE_ENV=production") || !has(own, "NODE_ENV=staging") || has(build, "NODE_ENV=production") || has(py, "NODE_ENV=production") {
		t.Errorf("NODE_ENV: gear %v, own %v, build %v, python %v", has(gear, "NODE_ENV=production"), has(own, "NODE_ENV=staging"), has(build, "NODE_ENV=production"), has(py, "NODE_ENV=production"))
	}
}
