package policy

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestParseACL(t *testing.T) {
	good := map[string]string{
		"API.Example.com":     "api.example.com",
		"*.example.com":       "*.example.com",
		"!bad.example.com":    "!bad.example.com",
		"all":                 "all",
		"198.51.100.0/24":     "198.51.100.0/24",
		"198.51.100.7":        "198.51.100.7",
		"api.example.com:443": "api.example.com:443",
		"[2001:db8::/32]:443": "[2001:db8::/32]:443",
		"2001:db8::1":         "2001:db8::1",
		"!*.ads.example.com":  "!*.ads.example.com",
	}
	for in, want := range good {
		e, err := ParseACL(in)
		if err != nil || e.Text != want {
			t.Errorf("ParseACL(%q) = %q, %v; want %q", in, e.Text, err, want)
		}
	}
	for _, bad := range []string{"", "!", "*.com", "a.*.example.com", "exa mple.com", "198.51.100.1/24", "api.example.com:0", "api.example.com:70000", "*"} {
		if _, err := ParseACL(bad); err == nil {
			t.Errorf("ParseACL(%q) accepted", bad)
		}
	}
}

func TestACLAllows(t *testing.T) {
	var a ACL
	for _, s := range []string{"*.example.com", "!bad.example.com", "partner.org:443", "198.51.100.0/24"} {
		e, err := ParseACL(s)
		if err != nil {
			t.Fatal(err)
		}
		a = append(a, e)
	}
	cases := []struct {
		host string
		port uint16
		ok   bool
		n    int
	}{
		{"api.example.com", 443, true, 1},
		{"a.b.example.com", 80, true, 1},
		{"API.EXAMPLE.COM.", 443, true, 1},
		{"example.com", 443, false, 0},     // the wildcard is below the domain
		{"bad.example.com", 443, false, 2}, // a denial wins though the wildcard comes first
		{"notexample.com", 443, false, 0},  // suffix on a label boundary only
		{"partner.org", 443, true, 3},
		{"partner.org", 80, false, 0},
		{"198.51.100.9", 22, true, 4},
		{"203.0.113.1", 443, false, 0},
	}
	for _, c := range cases {
		ok, n := a.Allows(c.host, c.port)
		if ok != c.ok || n != c.n {
			t.Errorf("Allows(%s, %d) = %v, %d; want %v, %d", c.host, c.port, ok, n, c.ok, c.n)
		}
	}
	if ok, _ := (ACL{}).Allows("api.example.com", 443); ok {
		t.Error("an empty ACL allows")
	}
}

func TestParseRedirectAndTarget(t *testing.T) {
	for in, want := range map[string]string{"smtp.partner.com:25": "smtp.partner.com:25", "*:25": "*:25", "198.51.100.7:25": "198.51.100.7:25", "198.51.100.0/24:587": "198.51.100.0/24:587"} {
		m, err := ParseRedirect(in)
		if err != nil || m.Text != want {
			t.Errorf("ParseRedirect(%q) = %q, %v", in, m.Text, err)
		}
	}
	for _, bad := range []string{"smtp.partner.com", "*:0", "198.51.100.1/24:25", "bad host:25"} {
		if _, err := ParseRedirect(bad); err == nil {
			t.Errorf("ParseRedirect(%q) accepted", bad)
		}
	}
	if got, err := ParseTarget("Relay.Partner.com:2525"); err != nil || got != "relay.partner.com:2525" {
		t.Errorf("ParseTarget: %q %v", got, err)
	}
	for _, bad := range []string{"relay", "relay:99999", "re lay:25"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

func TestRulesetBoundToRouter(t *testing.T) {
	any25, _ := ParseRedirect("*:25")
	host, _ := ParseRedirect("smtp.partner.com:587")
	cidr, _ := ParseRedirect("198.51.100.0/24:2525")
	p := Policy{Default: Allow, Rules: []Rule{mustParse(t, Allow, "all")}, Via: &Via{Ports: []uint16{3128, 3129, 3130}, Redirects: []NAT{
		{Match: any25, ToPort: 3129}, {Match: host, ToPort: 3130}, {Match: cidr, ToPort: 3131}}}}
	hosts := map[string][]netip.Addr{"smtp.partner.com": {netip.MustParseAddr("203.0.113.25")}}
	always := Always{Gateway: netip.MustParseAddr("10.88.0.1"), HostPorts: []uint16{80}}
	got := Ruleset(p, hosts, always)
	for _, want := range []string{
		`ip daddr 10.88.0.1 tcp dport { 3128, 3129, 3130 } accept comment "the egress router"`,
		`meta l4proto tcp counter reject with tcp reset comment "bound to the egress router"`,
		`tcp dport 25 dnat ip to 10.88.0.1:3129 comment "redirect 1: *:25"`,
		`ip daddr { 203.0.113.25 } tcp dport 587 dnat ip to 10.88.0.1:3130 comment "redirect 2: smtp.partner.com:587"`,
		`ip daddr 198.51.100.0/24 tcp dport 2525 dnat ip to 10.88.0.1:3131`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("bound ruleset lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "1: allow all") {
		t.Errorf("the app's own rules apply to direct traffic of a bound app:\n%s", got)
	}
	if ok, _ := p.Decide(netip.MustParseAddr("203.0.113.1"), 443, "tcp", nil); ok {
		t.Error("Decide allows direct traffic of a bound app")
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			cmd := exec.Command("nft", "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(got)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("nft -c refuses the bound ruleset: %v\n%s", err, out)
			}
		}
	}
}
