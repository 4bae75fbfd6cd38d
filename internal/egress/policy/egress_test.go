package policy

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, action, text string) Rule {
	t.Helper()
	r, err := Parse(action, text, DefaultLabels)
	if err != nil {
		t.Fatalf("Parse(%q): %v", text, err)
	}
	return r
}

func TestParse(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"smtp", "label smtp [25/tcp 465/tcp 587/tcp]"},
		{"SMTP", "label smtp [25/tcp 465/tcp 587/tcp]"},
		{"6667", "ports [6667]"},
		{"8000-8100/tcp", "ports [8000-8100/tcp]"},
		{"53/udp", "ports [53/udp]"},
		{"198.51.100.0/24", "cidr 198.51.100.0/24 []"},
		{"10.1.2.3/32:5432", "cidr 10.1.2.3/32 [5432]"},
		{"2001:db8::/32", "cidr 2001:db8::/32 []"},
		{"2001:db8::/32:443/tcp", "cidr 2001:db8::/32 [443/tcp]"},
		{"api.example.com", "host api.example.com"},
		{"xn--bcher-kva.example", "host xn--bcher-kva.example"},
		{"*.Example.com", "host *.example.com"},
		{"all", "all"},
	} {
		r := mustParse(t, Allow, c.in)
		var got string
		switch {
		case r.All:
			got = "all"
		case r.Label != "":
			got = "label " + r.Label + " " + portsString(r.Ports)
		case r.Prefix.IsValid():
			got = "cidr " + r.Prefix.String() + " " + portsString(r.Ports)
		case r.Host != "":
			got = "host " + r.Host
		default:
			got = "ports " + portsString(r.Ports)
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %s; want %s", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, says string }{
		{"", "empty"},
		{"0", "out of range"},
		{"70000", "out of range"},
		{"100-50", "backwards"},
		{"25/sctp", "tcp or udp"},
		{"198.51.100.0/33", "not a CIDR"},
		{"198.51.100.7/24", "host bits"},
		{"10.0.0.0/8:99999", "out of range"},
		{"smtpx", "unknown label"},
		{"192.0.2.1", "/32"},
		{"*.com", "wildcard"},
		{"*.bad_host.com", "wildcard"},
		{"*.*.example.com", "wildcard"},
		{"a.*.example.com", "not a label"},
		{"bad_host.example.com", "not a label"},
		{"-x.example", "not a label"},
	} {
		if _, err := Parse(Deny, c.in, DefaultLabels); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Parse(%q) error %v; want one saying %q", c.in, err, c.says)
		}
	}
	if _, err := Parse("block", "smtp", DefaultLabels); err == nil {
		t.Error("unknown action accepted")
	}
}

func portsString(ps []PortRange) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestDecideFirstMatchWins(t *testing.T) {
	hosts := map[string][]netip.Addr{"api.example.com": {netip.MustParseAddr("203.0.113.5")}}
	p := Policy{Default: Deny, Rules: []Rule{
		mustParse(t, Deny, "198.51.100.66/32"),
		mustParse(t, Allow, "smtp"),
		mustParse(t, Allow, "198.51.100.0/24:6667"),
		mustParse(t, Allow, "api.example.com"),
		mustParse(t, Deny, "25/tcp"), // shadowed by smtp
	}}
	for _, c := range []struct {
		dst   string
		port  uint16
		proto string
		allow bool
		rule  int
	}{
		{"198.51.100.66", 25, "tcp", false, 0},
		{"198.51.100.9", 25, "tcp", true, 1},
		{"198.51.100.9", 25, "udp", false, -1},
		{"198.51.100.9", 6667, "tcp", true, 2},
		{"192.0.2.9", 6667, "tcp", false, -1},
		{"203.0.113.5", 8443, "tcp", true, 3},
		{"203.0.113.6", 8443, "tcp", false, -1},
	} {
		allow, rule := p.Decide(netip.MustParseAddr(c.dst), c.port, c.proto, hosts)
		if allow != c.allow || rule != c.rule {
			t.Errorf("%s:%d/%s: allow=%v by rule %d; want %v by %d", c.dst, c.port, c.proto, allow, rule, c.allow, c.rule)
		}
	}
	if got := p.Shadowed(); got[4] != 1 || got[1] != -1 || got[2] != -1 {
		t.Errorf("Shadowed() = %v; want rule 5 shadowed by rule 2", got)
	}
	if allow, rule := (Policy{Default: Allow}).Decide(netip.MustParseAddr("192.0.2.1"), 1, "tcp", nil); !allow || rule != -1 {
		t.Error("default allow")
	}
}

func TestRuleset(t *testing.T) {
	p := Policy{Default: Deny, Rules: []Rule{
		mustParse(t, Allow, "smtp"),
		mustParse(t, Deny, "198.51.100.0/24"),
		mustParse(t, Allow, "api.example.com"),
		mustParse(t, Allow, "unresolved.example.com"),
		mustParse(t, Allow, "53"),
		mustParse(t, Allow, "*.partner.example"),
	}}
	hosts := map[string][]netip.Addr{"api.example.com": {netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8::5")}}
	always := Always{Gateway: netip.MustParseAddr("10.88.0.1"), HostPorts: []uint16{443, 80}, Peers: []netip.Addr{netip.MustParseAddr("10.88.0.7")},
		Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}, DNS: netip.MustParseAddrPort("10.88.0.1:53")}
	got := Ruleset(p, hosts, always)
	want := `add table inet gantry_egress
add chain inet gantry_egress output { type filter hook output priority 0; policy accept; }
flush chain inet gantry_egress output
add chain inet gantry_egress nat_out { type nat hook output priority -100; policy accept; }
flush chain inet gantry_egress nat_out
add chain inet gantry_egress input { type filter hook input priority 0; policy accept; }
flush chain inet gantry_egress input
table inet gantry_egress {
	set refused4 {
		typeof ip daddr . meta l4proto . th dport
		size 65535
		flags dynamic,timeout
		timeout 10m
		counter
	}
	set failed4 {
		typeof ip daddr . meta l4proto . th dport
		size 65535
		flags dynamic,timeout
		timeout 10m
		counter
	}
	chain input {
		type filter hook input priority 0; policy accept;
		meta nfproto ipv4 tcp flags rst ct direction reply ct status ! assured ct mark != 0x67616e74 add @failed4 { ct original ip daddr . ct protocol . ct original proto-dst } comment "reset before established"
		meta nfproto ipv4 icmp type { destination-unreachable, time-exceeded } ct state related ct mark != 0x67616e74 add @failed4 { ct original ip daddr . ct protocol . ct original proto-dst } comment "unreachable"
	}
	set host4_0aeb3084 {
		type ipv4_addr
		flags timeout
		comment "learned: api.example.com"
	}
	set host6_0aeb3084 {
		type ipv6_addr
		flags timeout
		comment "learned: api.example.com"
	}
	set host4_b35faa09 {
		type ipv4_addr
		flags timeout
		comment "learned: unresolved.example.com"
	}
	set host6_b35faa09 {
		type ipv6_addr
		flags timeout
		comment "learned: unresolved.example.com"
	}
	set host4_0f1b303d {
		type ipv4_addr
		flags timeout
		comment "learned: *.partner.example"
	}
	set host6_0f1b303d {
		type ipv6_addr
		flags timeout
		comment "learned: *.partner.example"
	}
	chain output {
		type filter hook output priority 0; policy accept;
		oifname "lo" accept
		ct state established,related accept
		ip daddr 10.88.0.1 tcp dport { 443, 80 } accept comment "the platform"
		ip daddr { 10.88.0.7 } accept comment "the app's own gears"
		ip daddr { 192.0.2.53 } meta l4proto { tcp, udp } th dport 53 accept comment "DNS"
		ip daddr 10.88.0.1 meta l4proto { tcp, udp } th dport 53 accept comment "DNS (the platform's forwarder)"
		tcp dport { 25, 465, 587 } counter accept comment "1: allow smtp"
		ip daddr 198.51.100.0/24 meta nfproto ipv4 meta l4proto { tcp, udp } ct mark set 0x67616e74 add @refused4 { ip daddr . meta l4proto . th dport } comment "2: deny 198.51.100.0/24"
		ip daddr 198.51.100.0/24 meta l4proto tcp counter reject with tcp reset comment "2: deny 198.51.100.0/24"
		ip daddr 198.51.100.0/24 counter reject with icmpx type admin-prohibited comment "2: deny 198.51.100.0/24"
		ip daddr { 203.0.113.5 } counter accept comment "3: allow api.example.com"
		ip6 daddr { 2001:db8::5 } counter accept comment "3: allow api.example.com"
		ip daddr @host4_0aeb3084 counter accept comment "3: allow api.example.com"
		ip6 daddr @host6_0aeb3084 counter accept comment "3: allow api.example.com"
		ip daddr @host4_b35faa09 counter accept comment "4: allow unresolved.example.com"
		ip6 daddr @host6_b35faa09 counter accept comment "4: allow unresolved.example.com"
		meta l4proto { tcp, udp } th dport 53 counter accept comment "5: allow 53"
		ip daddr @host4_0f1b303d counter accept comment "6: allow *.partner.example"
		ip6 daddr @host6_0f1b303d counter accept comment "6: allow *.partner.example"
		meta nfproto ipv4 meta l4proto { tcp, udp } ct mark set 0x67616e74 add @refused4 { ip daddr . meta l4proto . th dport } comment "default: deny"
		meta l4proto tcp counter reject with tcp reset comment "default: deny"
		counter reject with icmpx type admin-prohibited comment "default: deny"
	}
	chain nat_out {
		type nat hook output priority -100; policy accept;
		meta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 dnat ip to 10.88.0.1:53 comment "DNS through the platform's forwarder: hostname rules learn the app's answers"
	}
}
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// nft itself accepts it (a check run, nothing applied).
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			cmd := exec.Command("nft", "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(got)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("nft -c refuses the ruleset: %v\n%s", err, out)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"smtp", "8000-8100/tcp", "10.1.2.3/32:5432", "api.example.com", "all", "2001:db8::/32:443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(Deny, s, DefaultLabels)
		if err != nil {
			return
		}
		// Whatever parses renders to nft text without breaking out of a
		// comment or a line.
		out := Ruleset(Policy{Rules: []Rule{r}}, nil, Always{})
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Count(line, "\"")%2 != 0 {
				t.Fatalf("unbalanced quotes in %q", line)
			}
		}
	})
}

func TestParseLabels(t *testing.T) {
	l, err := ParseLabels(map[string][]string{"kafka": {"9092/tcp"}, "smtp": {"2525"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Parse(Allow, "kafka", l); err != nil || r.Ports[0] != (PortRange{9092, 9092, "tcp"}) {
		t.Errorf("operator label: %+v %v", r, err)
	}
	if got := l["smtp"]; len(got) != 1 || got[0].Lo != 2525 {
		t.Errorf("override: %v", got)
	}
	for _, bad := range []map[string][]string{{"Bad Name": {"1"}}, {"x": {}}, {"y": {"0"}}, {"all": {"1"}}} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("ParseLabels(%v) accepted", bad)
		}
	}
}

func TestScanDetector(t *testing.T) {
	p := ScanPolicy{Distinct: 5, Window: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	var retry, scan, slow ScanDetector
	// A client retrying one refused destination, many times: never.
	for i := 0; i < 100; i++ {
		if flagged, _ := retry.Observe(p, t0.Add(time.Duration(i)*100*time.Millisecond), []string{"198.51.100.7:25"}); flagged {
			t.Fatal("retries to one destination flagged as a scan")
		}
	}
	// Distinct ports in a burst: flagged at the fifth.
	for i := 1; i <= 5; i++ {
		flagged, n := scan.Observe(p, t0, []string{fmt.Sprintf("198.51.100.7:%d", i)})
		if flagged != (i == 5) || n != i {
			t.Errorf("scan step %d: flagged=%v n=%d", i, flagged, n)
		}
	}
	// The same number, spread wider than the window: not a scan.
	for i := 1; i <= 10; i++ {
		if flagged, _ := slow.Observe(p, t0.Add(time.Duration(i)*4*time.Second), []string{fmt.Sprintf("198.51.100.%d:80", i)}); flagged {
			t.Errorf("slow, spread refusals flagged at step %d", i)
		}
	}
	if err := (ScanPolicy{Distinct: 1, Window: time.Minute}).Validate(); err == nil {
		t.Error("threshold 1 accepted")
	}
}

func TestRulesetMergesAddressRuns(t *testing.T) {
	p := Policy{Default: Allow, Rules: []Rule{
		mustParse(t, Deny, "198.51.100.0/24"),
		mustParse(t, Deny, "203.0.113.0/24"),
		mustParse(t, Deny, "192.0.2.7/32"),
		mustParse(t, Deny, "198.51.100.128/25"), // overlaps the first: a run of its own
		mustParse(t, Allow, "10.0.0.0/8"),
	}}
	got := Ruleset(p, nil, Always{})
	for _, want := range []string{
		`ip daddr { 198.51.100.0/24, 203.0.113.0/24, 192.0.2.7/32 } meta l4proto tcp counter reject with tcp reset comment "1-3: deny 3 addresses"`,
		`ip daddr 198.51.100.128/25 meta l4proto tcp counter reject with tcp reset comment "4: deny 198.51.100.128/25"`,
		`ip daddr 10.0.0.0/8 counter accept comment "5: allow 10.0.0.0/8"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks\n%s\nin\n%s", want, got)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			cmd := exec.Command("nft", "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(got)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("nft -c refuses the merged ruleset: %v\n%s", err, out)
			}
		}
	}
}

func TestMatchHost(t *testing.T) {
	for _, c := range []struct {
		rule, name string
		want       bool
	}{
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "API.Example.com.", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
		{"*.example.com", "example.com.evil.test", false},
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "x.api.example.com", false},
	} {
		if got := MatchHost(c.rule, c.name); got != c.want {
			t.Errorf("MatchHost(%q, %q) = %v", c.rule, c.name, got)
		}
	}
	p := Policy{Rules: []Rule{mustParse(t, Allow, "*.example.com"), mustParse(t, Deny, "smtp"), mustParse(t, Deny, "*.example.com"), mustParse(t, Allow, "api.example.org")}}
	if got := strings.Join(p.HostRules(), " "); got != "*.example.com api.example.org" {
		t.Errorf("HostRules: %q", got)
	}
	// Learned addresses decide like resolved ones.
	hosts := map[string][]netip.Addr{"*.example.com": {netip.MustParseAddr("192.0.2.8")}}
	if ok, n := p.Decide(netip.MustParseAddr("192.0.2.8"), 443, "tcp", hosts); !ok || n != 0 {
		t.Errorf("learned address: %v rule %d", ok, n)
	}
	if LearnedSet("*.example.com", false) == LearnedSet("*.example.com", true) || LearnedSet("a.example", false) == LearnedSet("b.example", false) {
		t.Error("learned set names collide")
	}
}
