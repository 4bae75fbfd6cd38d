// Package gearenv assembles the environment of a gear's processes and of the
// build steps and hooks that run for it: the user's variables, Gantry's own
// (GANTRY_*) and the OpenShift names beside them so that apps written for
// OpenShift run unmodified. Build is a pure function of its parameters;
// Builder gathers them from the layout and the store (the app, its
// cartridges' gears, the egress router it is bound to).
package gearenv

import (
	"sort"
	"strconv"
	"strings"
)

// Params describe one gear (or one build, with GearID "build" and no port).
type Params struct {
	App, Domain, AppID, Host string
	Type                     string // the app type: nodejs, go…
	GearID, IP               string
	Port                     int
	// Process is what the gear runs: web, a Procfile type (worker), run,
	// cron or release.
	Process                 string
	DataDir, RepoDir        string
	LogDir, TmpDir, HomeDir string
	// PathPrefix directories come before BasePath in PATH.
	PathPrefix []string
	BasePath   string
	User       map[string]string
}

// Build returns the environment as sorted KEY=VALUE strings. Platform
// variables win over user variables of the same name (the API refuses such
// names anyway).
func Build(p Params) []string {
	env := map[string]string{}
	for k, v := range p.User {
		env[k] = v
	}
	cart := strings.ToUpper(p.Type)
	if cart == "" || cart == "PROCFILE" {
		cart = "WEB"
	}
	path := p.BasePath
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin:/usr/local/go/bin"
	}
	if len(p.PathPrefix) > 0 {
		path = strings.Join(p.PathPrefix, ":") + ":" + path
	}
	set := func(k, v string) { env[k] = v }
	set("PATH", path)
	set("HOME", p.HomeDir)
	set("TMPDIR", p.TmpDir)
	set("GANTRY_APP_NAME", p.App)
	set("GANTRY_APP_ID", p.AppID)
	set("GANTRY_DOMAIN", p.Domain)
	set("GANTRY_APP_DNS", p.Host)
	set("GANTRY_DATA_DIR", p.DataDir)
	set("GANTRY_REPO_DIR", p.RepoDir)
	set("GANTRY_LOG_DIR", p.LogDir)
	set("GANTRY_TMP_DIR", p.TmpDir)
	set("GANTRY_GEAR_ID", p.GearID)
	if p.Process != "" {
		set("GANTRY_PROCESS_TYPE", p.Process)
	}
	set("GANTRY_CARTRIDGE", p.Type) // OpenShift's name
	set("OPENSHIFT_APP_NAME", p.App)
	set("OPENSHIFT_APP_UUID", p.AppID)
	set("OPENSHIFT_GEAR_UUID", p.GearID)
	set("OPENSHIFT_NAMESPACE", p.Domain)
	set("OPENSHIFT_APP_DNS", p.Host)
	set("OPENSHIFT_GEAR_DNS", p.Host)
	// OpenShift's directory variables end in a slash; apps concatenate them.
	set("OPENSHIFT_DATA_DIR", slash(p.DataDir))
	set("OPENSHIFT_REPO_DIR", slash(p.RepoDir))
	set("OPENSHIFT_HOMEDIR", slash(p.HomeDir))
	set("OPENSHIFT_TMP_DIR", slash(p.TmpDir))
	set("OPENSHIFT_LOG_DIR", slash(p.LogDir))
	set("OPENSHIFT_"+cart+"_LOG_DIR", slash(p.LogDir))
	if p.Port > 0 {
		port := strconv.Itoa(p.Port)
		set("PORT", port)
		set("IP", p.IP)
		set("GANTRY_GEAR_IP", p.IP)
		set("GANTRY_"+cart+"_IP", p.IP)
		set("GANTRY_"+cart+"_PORT", port)
		set("OPENSHIFT_"+cart+"_IP", p.IP)
		set("OPENSHIFT_"+cart+"_PORT", port)
		// A Node.js app runs in production unless it says otherwise (its
		// build, which installs devDependencies, does not).
		if _, own := p.User["NODE_ENV"]; p.Type == "nodejs" && !own {
			set("NODE_ENV", "production")
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func slash(dir string) string {
	if dir == "" || strings.HasSuffix(dir, "/") {
		return dir
	}
	return dir + "/"
}
