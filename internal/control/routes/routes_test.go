package routes

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/router"
)

// Only running web gears are routed (not workers, cartridges or one-off
// runs); a stopped app keeps its route.
func TestCompile(t *testing.T) {
	apps := []store.App{
		{Name: "blog", Domain: "acme", Host: "blog-acme.localhost"},
		{Name: "off", Domain: "acme", Host: "off-acme.localhost", Stopped: true},
	}
	gears := []store.Gear{
		{ID: "g2", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 2, State: store.GearRunning},
		{ID: "g1", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 1, State: store.GearRunning},
		{ID: "g3", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 3, State: store.GearStarting},
		{ID: "g4", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 4, State: store.GearDraining},
		{ID: "g5", AppKey: "apps/other/x", IP: "127.0.0.1", Port: 5, State: store.GearRunning},
		{ID: "g6", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 6, State: store.GearRunning, Process: "worker"},
		{ID: "g7", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 7, State: store.GearRunning, Service: "postgresql"},
		{ID: "run1", AppKey: "apps/acme/blog", IP: "127.0.0.1", Port: 8, State: store.GearOneOff},
	}
	tbl := router.Compile(7, State(apps, gears, nil, nil, nil), nil)
	var b strings.Builder
	for _, h := range []string{"blog-acme.localhost", "off-acme.localhost"} {
		r := tbl.Routes[h]
		fmt.Fprintf(&b, "%s -> %s stopped=%v %v\n", h, r.App, r.Stopped, r.Endpoints)
	}
	want := "blog-acme.localhost -> acme/blog stopped=false [127.0.0.1:1 127.0.0.1:2]\n" +
		"off-acme.localhost -> acme/off stopped=true []\n"
	if b.String() != want || tbl.Rev != 7 || len(tbl.Routes) != 2 {
		t.Errorf("got\n%s; want\n%s", b.String(), want)
	}
}
