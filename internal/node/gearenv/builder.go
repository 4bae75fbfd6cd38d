package gearenv

import (
	"net/netip"
	"os"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/node/cartridge"
)

// Builder assembles gear and build environments from the layout, the
// app's record and its cartridges' gears.
type Builder struct {
	Layout layout.Layout
	// Path is the PATH after the app's own directories.
	Path  string
	Store *store.Store
	// The egress router, when there is one.
	EgressGateway netip.Addr
	EgressProxy   netip.AddrPort
	EgressSubnet  netip.Prefix
}

// passEnv are server variables that builds need to reach package registries.
var passEnv = []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"GOPROXY", "GOFLAGS", "GONOSUMDB", "GONOSUMCHECK", "GOPRIVATE", "GOSUMDB", "GOTOOLCHAIN", "npm_config_registry", "PIP_INDEX_URL"}

func (e *Builder) params(app *store.App, dir, appType string) Params {
	// Cartridges' variables first; the user's own win on a clash.
	user := map[string]string{}
	if len(app.Cartridges) > 0 {
		e.Store.View(func(tx *store.Tx) error {
			for _, c := range app.Cartridges {
				if g, err := store.ServiceGear(tx, app.Key(), c.Name); err == nil {
					for k, v := range cartridge.Env(c.Name, g.IP, g.Port, cartridge.Credentials{User: c.User, Password: c.Password, Database: c.Database}) {
						user[k] = v
					}
				}
			}
			return nil
		})
	}
	for k, v := range app.Env {
		user[k] = v
	}
	for k, v := range proxyEnv(app.EgressRouter, e.EgressGateway, e.EgressProxy, e.EgressSubnet) {
		user[k] = v // a bound app can only leave through the router
	}
	return Params{App: app.Name, Domain: app.Domain, AppID: app.ID, Host: app.Host, Type: appType,
		DataDir: e.Layout.Data(app.ID), RepoDir: dir, LogDir: e.Layout.Logs(app.ID), TmpDir: e.Layout.Tmp(app.ID),
		HomeDir: e.Layout.Home(app.ID), User: user, BasePath: e.Path,
		PathPrefix: []string{dir + "/node_modules/.bin", dir + "/.venv/bin", dir + "/.gantry/bin"}}
}

// ForGear is a gear's environment.
func (e *Builder) ForGear(app *store.App, dep *store.Deployment, g *store.Gear) []string {
	p := e.params(app, dep.Dir, dep.Type)
	p.GearID, p.IP, p.Port, p.Process = g.ID, g.IP, g.Port, g.Kind()
	if dep.RuntimeBin != "" {
		p.PathPrefix = append(p.PathPrefix, dep.RuntimeBin)
	}
	env := Build(p)
	if dep.RuntimeRoot != "" {
		env = append(env, "GANTRY_RUNTIME_ROOT="+dep.RuntimeRoot)
	}
	return env
}

// ForBuild is the environment of a build step or hook of the app,
// with the build caches and the server's proxy and registry variables.
func (e *Builder) ForBuild(app *store.App, dir, appType string) []string {
	p := e.params(app, dir, appType)
	p.GearID = "build"
	env := Build(p)
	cache := e.Layout.Cache(app.ID)
	env = append(env, "GOCACHE="+cache+"/go-build", "GOPATH="+cache+"/go", "GOMODCACHE="+cache+"/go/pkg/mod",
		"npm_config_cache="+cache+"/npm", "PIP_CACHE_DIR="+cache+"/pip", "CI=true")
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// proxyEnv is what a bound app's gears are told: the router's address
// and, with the HTTP proxy, the proxy variables every HTTP client reads.
func proxyEnv(r *store.EgressRouter, gateway netip.Addr, proxy netip.AddrPort, subnet netip.Prefix) map[string]string {
	if r.Empty() || !gateway.IsValid() {
		return nil
	}
	env := map[string]string{"GANTRY_EGRESS_ROUTER": gateway.String()}
	if r.Proxy {
		u := "http://" + proxy.String()
		no := strings.Join([]string{"localhost", "127.0.0.1", "::1", gateway.String(), subnet.Masked().String()}, ",")
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
			env[k] = u
		}
		env["NO_PROXY"], env["no_proxy"] = no, no
	}
	return env
}
