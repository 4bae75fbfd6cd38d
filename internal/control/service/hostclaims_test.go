package service

import (
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func TestHostConflict(t *testing.T) {
	alice := []store.Alias{
		{Host: "www.alice.test", Owner: "alice"},
		{Host: "*.wild.test", Owner: "alice"},
		{Host: "shop.example.test", Owner: "alice"},
	}
	cases := []struct {
		host, owner string
		conflict    bool
	}{
		{"alice.test", "bob", true},            // apex of alice's www. alias
		{"www.alice.test", "bob", true},        // alice's exact name
		{"a.wild.test", "bob", true},           // under alice's wildcard
		{"*.wild.test", "bob", true},           // the same wildcard
		{"b.a.wild.test", "bob", false},        // a wildcard covers one label
		{"*.example.test", "bob", true},        // over alice's exact name
		{"www.wild.test", "bob", true},         // under the wildcard, and its apex
		{"www.shop.example.test", "bob", true}, // its apex is alice's name
		{"www.example.test", "bob", false},     // apex example.test: nobody's
		{"bob.test", "bob", false},
		{"*.alice.test", "bob", true},   // over www.alice.test
		{"a.wild.test", "alice", false}, // alice's own names may overlap
		{"alice.test", "alice", false},
	}
	for _, c := range cases {
		t.Run(c.host+"-"+c.owner, func(t *testing.T) {
			got := hostConflict(c.host, c.owner, alice)
			if (got != "") != c.conflict {
				t.Errorf("hostConflict(%q, %q) = %q; want conflict %v", c.host, c.owner, got, c.conflict)
			}
		})
	}
	// Bob's apex redirect is taken by nobody: alice may not add its apex.
	bob := []store.Alias{{Host: "www.bob.test", Owner: "bob"}}
	if hostConflict("bob.test", "alice", bob) == "" {
		t.Error("alice took bob's apex")
	}
	if hostConflict("*.bob.test", "alice", bob) == "" {
		t.Error("alice's wildcard overlaps bob's www name")
	}
}
