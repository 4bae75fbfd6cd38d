package agent

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// Several servers on one host (tests, a simulated cluster) get user ids
// and cgroups of their own, from their net prefix.
func TestServersOnOneHostDoNotShare(t *testing.T) {
	lo, hi := UIDRange("gantry")
	if lo != 200000 || hi != 265535 {
		t.Errorf("default range %d-%d; want 200000-265535", lo, hi)
	}
	seen := map[int]string{lo: "gantry"}
	for _, p := range []string{"ge1234", "gbe42", "gt99", "node2", "node3"} {
		l, h := UIDRange(p)
		if h-l != 65535 || l < 265536 || h > 1<<31-1 {
			t.Errorf("%s: range %d-%d", p, l, h)
		}
		if other, ok := seen[l]; ok {
			t.Errorf("%s and %s share uids from %d", p, other, l)
		}
		seen[l] = p
	}
	a := &Agent{o: Options{Network: netplan.Plan{Prefix: "node2"}}}
	b := &Agent{}
	if a.cgroupParent("g1") != "node2/g1" || b.cgroupParent("g1") != "gantry/g1" {
		t.Errorf("cgroup parents %q, %q", a.cgroupParent("g1"), b.cgroupParent("g1"))
	}
}

// The DNS-learning index finds a namespaced gear and its app by address,
// and follows the store.
func TestGearByAddr(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := &Agent{o: Options{Store: st}}
	app := store.App{Name: "web", Domain: "acme"}
	put := func(g store.Gear) {
		st.Update(func(tx *store.Tx) error {
			tx.Put(app.Key(), &app)
			return tx.Put(store.GearKey(g.ID), &g)
		})
	}
	put(store.Gear{ID: "g1", AppKey: app.Key(), IP: "10.88.0.2", State: store.GearRunning, Isolation: Namespaces})
	if g, got, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.2")); !ok || g.ID != "g1" || got.Name != "web" {
		t.Fatalf("gearByAddr: %+v %+v %v", g, got, ok)
	}
	if _, _, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.3")); ok {
		t.Fatal("found a gear at an address nobody has")
	}
	put(store.Gear{ID: "g2", AppKey: app.Key(), IP: "10.88.0.3", State: store.GearRunning, Isolation: Namespaces})
	if g, _, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.3")); !ok || g.ID != "g2" {
		t.Fatalf("after a new gear: %+v %v", g, ok)
	}
}
