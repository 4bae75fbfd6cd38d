package scheduler

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func nodes(names ...string) []store.Node {
	var out []store.Node
	for _, n := range names {
		out = append(out, store.Node{Name: n, Roles: []string{store.RoleControl, store.RoleNode, store.RoleEdge}, MemoryTotal: 4 << 30})
	}
	return out
}

func TestPlace(t *testing.T) {
	blog := store.App{Name: "blog", Domain: "acme"}
	big := store.App{Name: "big", Domain: "acme", GearSize: "large"}
	apps := map[string]store.App{blog.Key(): blog, big.Key(): big}
	live := map[string]bool{"m1": true, "m2": true, "m3": true}
	v := View{Nodes: nodes("m1", "m2", "m3"), Live: live, Apps: apps}

	// Six gears of one app: two on each machine.
	got, err := Place(v, &blog, 6)
	count := map[string]int{}
	for _, n := range got {
		count[n]++
	}
	if err != nil || count["m1"] != 2 || count["m2"] != 2 || count["m3"] != 2 {
		t.Errorf("six gears: %v %v", got, err)
	}

	// Existing gears count: the app's own spread first, then memory.
	v.Gears = []store.Gear{
		{ID: "a", AppKey: blog.Key(), Node: "m1", State: store.GearRunning},
		{ID: "b", AppKey: big.Key(), Node: "m2", State: store.GearRunning},
	}
	if got, _ := Place(v, &blog, 1); fmt.Sprint(got) != "[m3]" {
		t.Errorf("next gear of blog: %v; want m3 (no blog gear, most memory)", got)
	}
	if got, _ := Place(v, &blog, 2); fmt.Sprint(got) != "[m3 m2]" {
		t.Errorf("two more: %v; want m3 then m2 (m1 has blog already)", got)
	}

	// Down, cordoned and edge-only machines get nothing.
	v.Nodes[1].Cordoned = true
	v.Nodes = append(v.Nodes, store.Node{Name: "e1", Roles: []string{store.RoleEdge}, MemoryTotal: 64 << 30})
	live["e1"] = true
	delete(live, "m3")
	if got, _ := Place(v, &blog, 3); fmt.Sprint(got) != "[m1 m1 m1]" {
		t.Errorf("with m2 cordoned, m3 down: %v", got)
	}

	// Memory: m1 (4 GiB) holds 1 small; large gears need 2 GiB each.
	got, err = Place(v, &big, 2)
	if err == nil || !strings.Contains(err.Error(), "no machine has room for a large gear") ||
		!strings.Contains(err.Error(), "m2 is cordoned") || !strings.Contains(err.Error(), "m3 is down") {
		t.Errorf("two large gears on one 4 GiB machine with a gear: %v %v", got, err)
	}
	if got, err := Place(v, &big, 1); err != nil || fmt.Sprint(got) != "[m1]" {
		t.Errorf("one large gear: %v %v", got, err)
	}
}
