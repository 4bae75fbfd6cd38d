package enforce

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// What `nft -j list sets table inet gantry_egress` prints in a gear: the
// destination sets beside learned-address sets, whose elements are plain.
func TestParseDestinations(t *testing.T) {
	out := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"set": {"family": "inet", "name": "refused4", "table": "gantry_egress", "elem": [{"elem": {"val": {"concat": ["198.18.7.2", "tcp", 25]}, "expires": 599, "counter": {"packets": 3, "bytes": 120}}}]}},
 {"set": {"family": "inet", "name": "failed4", "table": "gantry_egress", "elem": [{"elem": {"val": {"concat": ["198.18.7.2", "udp", 53]}, "counter": {"packets": 1, "bytes": 40}}}]}},
 {"set": {"family": "inet", "name": "host4_0f1b303d", "table": "gantry_egress", "elem": [{"elem": {"val": "198.18.7.2", "timeout": 180, "expires": 170}}, "203.0.113.9"]}}]}`)
	got := parseDestinations(out)
	if r := got["refused4"]; len(r) != 1 || r[0].Dest != "198.18.7.2:25" || r[0].Proto != "tcp" || r[0].Packets != 3 {
		t.Errorf("refused4: %+v", r)
	}
	if f := got["failed4"]; len(f) != 1 || f[0].Dest != "198.18.7.2:53" || f[0].Proto != "udp" {
		t.Errorf("failed4: %+v", f)
	}
	if len(got["host4_0f1b303d"]) != 0 {
		t.Errorf("learned addresses read as destinations: %+v", got["host4_0f1b303d"])
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
	a := &Enforcer{o: Options{Store: st}}
	app := store.App{Name: "web", Domain: "acme"}
	put := func(g store.Gear) {
		st.Update(func(tx *store.Tx) error {
			tx.Put(app.Key(), &app)
			return tx.Put(store.GearKey(g.ID), &g)
		})
	}
	put(store.Gear{ID: "g1", AppKey: app.Key(), IP: "10.88.0.2", State: store.GearRunning, Isolation: namespaces})
	if g, got, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.2")); !ok || g.ID != "g1" || got.Name != "web" {
		t.Fatalf("gearByAddr: %+v %+v %v", g, got, ok)
	}
	if _, _, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.3")); ok {
		t.Fatal("found a gear at an address nobody has")
	}
	put(store.Gear{ID: "g2", AppKey: app.Key(), IP: "10.88.0.3", State: store.GearRunning, Isolation: namespaces})
	if g, _, ok := a.gearByAddr(netip.MustParseAddr("10.88.0.3")); !ok || g.ID != "g2" {
		t.Fatalf("after a new gear: %+v %v", g, ok)
	}
}
