package router

import (
	"sort"

	"github.com/gantry-paas/gantry/internal/store"
)

// Route is what the router knows about one hostname.
type Route struct {
	Host      string
	AppKey    string
	App       string // DOMAIN/NAME, for logs
	Stopped   bool
	Idle      bool     // scaled to zero: requests wait while it wakes
	Endpoints []string // routed gears, sorted
}

// Table maps hostnames to routes. A Table is immutable once built.
type Table struct {
	Rev    int64
	Routes map[string]*Route
}

// Compile builds the route table from apps and gears: each app's canonical
// host routes to its gears in state running. It is a pure function.
func Compile(rev int64, apps []store.App, gears []store.Gear) *Table {
	t := &Table{Rev: rev, Routes: map[string]*Route{}}
	byKey := map[string]*Route{}
	for _, a := range apps {
		r := &Route{Host: a.Host, AppKey: a.Key(), App: a.FullName(), Stopped: a.Stopped, Idle: a.Idle && !a.Stopped}
		t.Routes[a.Host] = r
		byKey[a.Key()] = r
	}
	for _, g := range gears {
		if g.State != store.GearRunning || g.Service != "" {
			continue // only web gears take requests
		}
		if r := byKey[g.AppKey]; r != nil {
			r.Endpoints = append(r.Endpoints, g.Endpoint())
		}
	}
	for _, r := range t.Routes {
		sort.Strings(r.Endpoints)
	}
	return t
}
