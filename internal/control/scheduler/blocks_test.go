package scheduler

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func TestClaimBlock(t *testing.T) {
	st, err := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	subnet := netip.MustParsePrefix("10.88.0.0/16")
	addr := netip.MustParseAddr("192.0.2.1")
	// m1 ran alone before: most of its gears are in 10.88.3.0/24.
	if err := st.Update(func(tx *store.Tx) error {
		for i, ip := range []string{"10.88.0.9", "10.88.3.4", "10.88.3.5"} {
			g := store.Gear{ID: string(rune('a' + i)), AppKey: "apps/x-y", IP: ip, Node: "m1"}
			if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b1, err := ClaimBlock(st, "m1", subnet, addr)
	if err != nil || b1.String() != "10.88.3.0/24" {
		t.Fatalf("m1: %v %v; want 10.88.3.0/24, where its gears are", b1, err)
	}
	b2, err := ClaimBlock(st, "m2", subnet, addr)
	if err != nil || b2.String() != "10.88.0.0/24" {
		t.Fatalf("m2: %v %v; want the first free block", b2, err)
	}
	if again, err := ClaimBlock(st, "m1", subnet, addr); err != nil || again != b1 {
		t.Errorf("m1 again: %v %v; want its own block", again, err)
	}
	if _, err := ClaimBlock(st, "m3", netip.MustParsePrefix("10.90.0.0/16"), addr); err == nil || !strings.Contains(err.Error(), "--gear-subnet 10.88.0.0/16") {
		t.Errorf("another subnet: %v; want a refusal naming the cluster's", err)
	}
	if _, err := ClaimBlock(st, "m3", subnet, netip.MustParseAddr("10.88.7.7")); err == nil || !strings.Contains(err.Error(), "inside the gear subnet") {
		t.Errorf("an address inside the subnet: %v; want a refusal", err)
	}
	small := netip.MustParsePrefix("10.66.0.0/24")
	st2, _ := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	defer st2.Close()
	for i, want := range []string{"10.66.0.0/28", "10.66.0.16/28"} {
		b, err := ClaimBlock(st2, string(rune('p'+i)), small, addr)
		if err != nil || b.String() != want {
			t.Errorf("block %d of a /24: %v %v; want %s", i, b, err, want)
		}
	}
}

func TestClaimOverlay(t *testing.T) {
	st, err := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	noWG := errors.New("this kernel makes no WireGuard device")
	if m, err := ClaimOverlay(st, "", noWG); err != nil || m != OverlayVXLAN {
		t.Fatalf("first machine, auto, no WireGuard: %q %v", m, err)
	}
	if m, err := ClaimOverlay(st, OverlayAuto, nil); err != nil || m != OverlayVXLAN {
		t.Errorf("a later machine that has WireGuard takes the cluster's: %q %v", m, err)
	}
	if _, err := ClaimOverlay(st, OverlayWireGuard, nil); err == nil || !strings.Contains(err.Error(), "--overlay vxlan") {
		t.Errorf("asking for another overlay: %v", err)
	}
	if _, err := ClaimOverlay(st, "ipsec", nil); err == nil {
		t.Error("an unknown overlay was taken")
	}
	st2, _ := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	defer st2.Close()
	if m, err := ClaimOverlay(st2, OverlayAuto, nil); err != nil || m != OverlayWireGuard {
		t.Errorf("first machine, auto, with WireGuard: %q %v", m, err)
	}
	if _, err := ClaimOverlay(st2, OverlayAuto, noWG); err == nil || !strings.Contains(err.Error(), "cannot make") {
		t.Errorf("a machine without WireGuard joining a WireGuard cluster: %v", err)
	}
	if _, err := ClaimOverlay(st2, OverlayWireGuard, noWG); err == nil || !strings.Contains(err.Error(), "--overlay vxlan") {
		t.Errorf("--overlay wireguard without the module: %v", err)
	}
}
