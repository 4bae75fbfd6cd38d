package netplan

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRulesetIsPureAndOrdered(t *testing.T) {
	a := Plan{HostTCPPorts: []uint16{8080, 2222}, HostUDPPorts: []uint16{53}, Gears: []Gear{
		{ID: "g2", App: "appB", IP: netip.MustParseAddr("10.88.0.3")},
		{ID: "g1", App: "appA", IP: netip.MustParseAddr("10.88.0.2")},
		{ID: "g3", App: "appA", IP: netip.MustParseAddr("10.88.0.4")},
	}}
	b := a
	b.Gears = []Gear{a.Gears[2], a.Gears[0], a.Gears[1]}
	b.HostTCPPorts = []uint16{2222, 8080}
	if Ruleset(a) != Ruleset(b) {
		t.Fatal("the same plan in another order renders differently")
	}
	r := Ruleset(a)
	for _, want := range []string{
		"elements = { 10.88.0.2 . 10.88.0.4, 10.88.0.4 . 10.88.0.2 }",
		"ip saddr . ip daddr @pairs accept",
		"ip saddr 10.88.0.0/16 ip daddr 10.88.0.0/16 drop",
		"ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade",
		`iifname "gantry0" ip daddr 10.88.0.1 tcp dport { 2222, 8080 } accept`,
		`iifname "gantry0" ip daddr 10.88.0.1 udp dport { 53 } accept`,
		`iifname "gantry0" meta l4proto tcp reject with tcp reset`,
	} {
		if !strings.Contains(r, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, r)
		}
	}
	c := a
	c.Gears = a.Gears[:2]
	if Ruleset(c) == r {
		t.Error("removing a gear did not change the ruleset")
	}
}

func TestValidate(t *testing.T) {
	ip := netip.MustParseAddr
	for name, p := range map[string]Plan{
		"outside":   {Gears: []Gear{{ID: "a", IP: ip("10.99.0.2")}}},
		"gateway":   {Gears: []Gear{{ID: "a", IP: ip("10.88.0.1")}}},
		"duplicate": {Gears: []Gear{{ID: "a", IP: ip("10.88.0.2")}, {ID: "b", IP: ip("10.88.0.2")}}},
		"v6":        {Subnet: netip.MustParsePrefix("fd00::/64")},
	} {
		t.Run(name, func(t *testing.T) {
			if err := p.Normalize().Validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	s := netip.MustParsePrefix("10.88.0.0/29")
	used := map[netip.Addr]bool{}
	var got []string
	var last netip.Addr
	for {
		a, err := Allocate(s, used, last)
		if err != nil {
			break
		}
		used[a], last = true, a
		got = append(got, a.String())
	}
	// .0 network, .1 host, .7 broadcast are never handed out.
	if strings.Join(got, " ") != "10.88.0.2 10.88.0.3 10.88.0.4 10.88.0.5 10.88.0.6" {
		t.Errorf("allocated %v", got)
	}
	// Round-robin: .3 freed after .6 was handed out: the next is .3 only
	// once the others are taken, and a free .2 is skipped for a later one.
	delete(used, netip.MustParseAddr("10.88.0.3"))
	delete(used, netip.MustParseAddr("10.88.0.5"))
	a, _ := Allocate(s, used, netip.MustParseAddr("10.88.0.4"))
	if a.String() != "10.88.0.5" {
		t.Errorf("after .4: got %s; want .5", a)
	}
	a, _ = Allocate(s, used, netip.MustParseAddr("10.88.0.6"))
	if a.String() != "10.88.0.3" {
		t.Errorf("wrap after .6: got %s; want .3", a)
	}
	big := netip.MustParsePrefix("10.88.0.0/16")
	a, _ = Allocate(big, map[netip.Addr]bool{}, netip.MustParseAddr("10.88.255.254"))
	if a.String() != "10.88.0.2" {
		t.Errorf("wrap in /16: got %s", a)
	}
	a, _ = Allocate(big, map[netip.Addr]bool{}, netip.MustParseAddr("10.88.7.9"))
	if a.String() != "10.88.7.10" {
		t.Errorf("after 10.88.7.9: got %s", a)
	}
}
