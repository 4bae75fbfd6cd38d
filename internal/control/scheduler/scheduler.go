// Package scheduler decides where gears run in a cluster and keeps apps
// running when a machine is lost. Place (pure) picks machines for new
// gears: up, not cordoned, with the role node, with memory for the gear's
// size, an app's gears spread over machines. The Failover loop, run by
// one machine at a time (the store's leader election), moves the web
// gears of a machine whose presence lapsed longer than the grace time to
// the others; cartridges (databases) stay where their data is.
package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// GearMemory is the memory a gear of a size may use (its limit).
func GearMemory(size string) int64 {
	switch size {
	case "medium":
		return 1 << 30
	case "large":
		return 2 << 30
	}
	return 512 << 20
}

// View is what placement looks at.
type View struct {
	Nodes []store.Node
	Live  map[string]bool
	Gears []store.Gear
	Apps  map[string]store.App // by key
	// Isolation of the gears to place: machines of another mode get none
	// ("": any).
	Isolation string
}

type candidate struct {
	name     string
	free     int64 // -1: unknown, no limit
	appGears int
	gears    int
}

// Place picks machines for n new gears of app, one per gear. It fails,
// saying why for each machine, when one of them cannot go anywhere.
func Place(v View, app *store.App, n int) ([]string, error) {
	need := GearMemory(app.GearSize)
	var cands []*candidate
	var why []string
	for _, nd := range v.Nodes {
		switch {
		case !nd.HasRole(store.RoleNode):
			continue
		case !v.Live[nd.Name]:
			why = append(why, nd.Name+" is down")
			continue
		case nd.Cordoned:
			why = append(why, nd.Name+" is cordoned")
			continue
		case v.Isolation != "" && nd.Isolation != "" && nd.Isolation != v.Isolation:
			why = append(why, nd.Name+" runs "+nd.Isolation+" isolation")
			continue
		}
		c := &candidate{name: nd.Name, free: -1}
		if nd.MemoryTotal > 0 {
			c.free = nd.MemoryTotal
		}
		for _, g := range v.Gears {
			if g.Node != nd.Name || g.State == store.GearStopped {
				continue
			}
			c.gears++
			if g.AppKey == app.Key() && g.Service == "" && g.State != store.GearDraining {
				c.appGears++ // (draining gears are on their way out)
			}
			if c.free >= 0 {
				c.free -= GearMemory(v.Apps[g.AppKey].GearSize)
			}
		}
		cands = append(cands, c)
	}
	var out []string
	for i := 0; i < n; i++ {
		sort.SliceStable(cands, func(a, b int) bool {
			ca, cb := cands[a], cands[b]
			if ca.appGears != cb.appGears {
				return ca.appGears < cb.appGears // spread the app
			}
			if (ca.free < 0) != (cb.free < 0) {
				return ca.free < 0
			}
			if ca.free != cb.free {
				return ca.free > cb.free // the emptiest
			}
			return ca.name < cb.name
		})
		var pick *candidate
		for _, c := range cands {
			if c.free < 0 || c.free >= need {
				pick = c
				break
			}
		}
		if pick == nil {
			for _, c := range cands {
				why = append(why, fmt.Sprintf("%s has %.1f GiB free", c.name, float64(max(c.free, 0))/(1<<30)))
			}
			sort.Strings(why)
			return nil, fmt.Errorf("no machine has room for a %s gear (%d MiB): %s; add a machine, uncordon one, or scale down another app",
				sizeName(app.GearSize), need>>20, strings.Join(why, ", "))
		}
		pick.appGears++
		pick.gears++
		if pick.free >= 0 {
			pick.free -= need
		}
		out = append(out, pick.name)
	}
	return out, nil
}

func sizeName(s string) string {
	if s == "" {
		return "small"
	}
	return s
}

// Placer places gears of an isolation mode with the machines, gears and
// apps of the transaction and the machines up now.
func Placer(st *store.Store, isolation string) func(tx *store.Tx, app *store.App, n int) ([]string, error) {
	return func(tx *store.Tx, app *store.App, n int) ([]string, error) {
		live, err := st.Live()
		if err != nil {
			return nil, err
		}
		v := View{Live: live, Apps: map[string]store.App{}, Isolation: isolation}
		if v.Nodes, err = store.ListNodes(tx); err != nil {
			return nil, err
		}
		if v.Gears, err = store.ListGears(tx); err != nil {
			return nil, err
		}
		apps, err := store.ListApps(tx)
		for _, a := range apps {
			v.Apps[a.Key()] = a
		}
		if err != nil {
			return nil, err
		}
		return Place(v, app, n)
	}
}
