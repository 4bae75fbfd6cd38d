package gearenv

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

// A gear sees its cartridges' variables, the user's own over them, and the
// egress router's proxy when its app is bound to it.
func TestBuilderForGear(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app := store.App{ID: "a1", Name: "blog", Domain: "acme", Host: "blog-acme.localhost",
		Cartridges:   []store.Cartridge{{Name: "postgresql", User: "u", Password: "p", Database: "blog"}},
		Env:          map[string]string{"PGPORT": "6000", "GREETING": "hi"},
		EgressRouter: &store.EgressRouter{Proxy: true}}
	st.Update(func(tx *store.Tx) error {
		tx.Put(app.Key(), &app)
		return tx.Put(store.GearKey("pg"), &store.Gear{ID: "pg", AppKey: app.Key(), Service: "postgresql", IP: "10.9.0.7", Port: 5432})
	})
	b := &Builder{Layout: layout.Layout{Root: dir}, Store: st, Path: "/usr/bin:/bin",
		EgressGateway: netip.MustParseAddr("10.9.0.1"), EgressProxy: netip.MustParseAddrPort("10.9.0.1:3128"), EgressSubnet: netip.MustParsePrefix("10.9.0.0/16")}
	env := b.ForGear(&app, &store.Deployment{Dir: "/srv/d1", Type: "nodejs"}, &store.Gear{ID: "g1", IP: "10.9.0.5", Port: 8080})
	for _, want := range []string{"GANTRY_POSTGRESQL_IP=10.9.0.7", "PGDATABASE=blog", "PGPORT=6000", "GREETING=hi", "HTTP_PROXY=http://10.9.0.1:3128", "GANTRY_EGRESS_ROUTER=10.9.0.1",
		"GANTRY_GEAR_ID=g1", "PORT=8080", "PATH=/srv/d1/node_modules/.bin:/srv/d1/.venv/bin:/srv/d1/.gantry/bin:/usr/bin:/bin"} {
		if !slices.Contains(env, want) {
			t.Errorf("missing %s in\n%v", want, env)
		}
	}
	build := b.ForBuild(&app, "/srv/build", "nodejs")
	if !slices.Contains(build, "GANTRY_GEAR_ID=build") || !slices.Contains(build, "CI=true") {
		t.Errorf("build environment: %v", build)
	}
}
