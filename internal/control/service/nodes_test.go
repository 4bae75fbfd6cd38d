package service

import (
	"context"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/scheduler"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/agent"
)

// Nodes: registration keeps what operators set, a live name is not taken
// by another address, a node that is up or holds a database is not
// removed, and only admins see or change nodes.
func TestNodes(t *testing.T) {
	s := newService(t)
	admin, _, _ := s.CreateUser(nil, "admin", true)
	alice, _, _ := s.CreateUser(&admin, "alice", false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	m1 := store.Node{Name: "m1", Address: "192.0.2.1", Roles: []string{store.RoleNode}, MemoryTotal: 8 << 30}
	if err := s.RegisterNode(m1); err != nil {
		t.Fatal(err)
	}
	if err := s.st.KeepAlive(ctx, "m1", NodeTTL, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cordon(&admin, "m1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterNode(m1); err != nil { // a restart
		t.Fatal(err)
	}
	other := m1
	other.Address = "192.0.2.9"
	if err := s.RegisterNode(other); !IsKind(err, Conflict) {
		t.Errorf("a live node's name from another address: %v; want a conflict", err)
	}
	if err := s.RegisterNode(store.Node{Name: "M 1"}); !IsKind(err, Invalid) {
		t.Errorf("a bad node name: %v", err)
	}
	if err := s.RegisterNode(store.Node{Name: "m2", Address: "192.0.2.2"}); err != nil {
		t.Fatal(err)
	}
	s.st.Update(func(tx *store.Tx) error {
		tx.Put(store.AppKey("acme", "blog"), &store.App{Name: "blog", Domain: "acme", GearSize: "medium"})
		tx.Put(store.GearKey("g1"), &store.Gear{ID: "g1", AppKey: store.AppKey("acme", "blog"), Node: "m1", State: store.GearRunning})
		tx.Put(store.GearKey("g2"), &store.Gear{ID: "g2", AppKey: store.AppKey("acme", "blog"), Node: "m2", State: store.GearRunning})
		return tx.Put(store.GearKey("g3"), &store.Gear{ID: "g3", AppKey: store.AppKey("acme", "blog"), Node: "m2", Service: "postgresql", State: store.GearRunning})
	})
	ns, err := s.Nodes(&admin)
	if err != nil || len(ns) != 2 {
		t.Fatalf("nodes %+v %v", ns, err)
	}
	if n := ns[0]; !n.Up || !n.Cordoned || n.Gears != 1 || n.MemoryUsed != 1<<30 || n.MemoryTotal != 8<<30 || n.Joined.IsZero() {
		t.Errorf("m1: %+v; want up, cordoned after a restart, one medium gear", n)
	}
	if n := ns[1]; n.Up || n.Gears != 2 {
		t.Errorf("m2: %+v; want down with two gears", n)
	}
	if _, err := s.Nodes(&alice); !IsKind(err, Forbidden) {
		t.Errorf("nodes listed by a user: %v", err)
	}
	if _, err := s.Cordon(&alice, "m1", false); !IsKind(err, Forbidden) {
		t.Errorf("cordon by a user: %v", err)
	}
	if _, err := s.Cordon(&admin, "m9", true); !IsKind(err, NotFound) {
		t.Errorf("cordon of no node: %v", err)
	}
	if err := s.RemoveNode(&admin, "m1"); !IsKind(err, Conflict) {
		t.Errorf("removing a node that is up: %v", err)
	}
	if err := s.RemoveNode(&admin, "m2"); !IsKind(err, Conflict) {
		t.Errorf("removing a node with a database: %v", err)
	}
	s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey("g3")) })
	if err := s.RemoveNode(&admin, "m2"); err != nil {
		t.Fatal(err)
	}
	s.st.View(func(tx *store.Tx) error {
		if ok, _ := tx.Has(store.GearKey("g2")); ok {
			t.Error("the removed node's gear record stays")
		}
		return nil
	})
}

// Placement counts memory with the sizes the gears are given.
func TestGearMemoryIsTheLimit(t *testing.T) {
	for name, l := range agent.Sizes {
		if scheduler.GearMemory(name) != l.MemoryBytes {
			t.Errorf("%s: %d; the gears' limit is %d", name, scheduler.GearMemory(name), l.MemoryBytes)
		}
	}
}
