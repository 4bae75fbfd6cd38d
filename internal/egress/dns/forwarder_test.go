package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/egress/dns/dnstest"
)

type learned struct {
	src     netip.Addr
	names   []string
	answers []Answer
}

// start runs a forwarder on loopback in front of a test server.
func start(t *testing.T) (*Forwarder, *dnstest.Server, func() []learned) {
	t.Helper()
	up, err := dnstest.Start(map[string][]string{
		"api.example.test": {"192.0.2.10", "192.0.2.11"},
		"www.example.test": {"cname:edge.cdn.test"},
		"edge.cdn.test":    {"198.51.100.5", "2001:db8::5"},
		"*.wild.test":      {"192.0.2.99"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	var mu sync.Mutex
	var got []learned
	ctx, cancel := context.WithCancel(context.Background())
	f := New(Options{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Upstreams: []string{"127.0.0.1:1", up.Addr}, Timeout: time.Second,
		Learn: func(src netip.Addr, names []string, answers []Answer) {
			mu.Lock()
			got = append(got, learned{src, names, answers})
			mu.Unlock()
		}})
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); f.Wait() })
	return f, up, func() []learned {
		mu.Lock()
		defer mu.Unlock()
		return append([]learned(nil), got...)
	}
}

// resolver asks the forwarder, over UDP or TCP, with Go's own client.
func resolver(addr string, network string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func TestForwardAndLearn(t *testing.T) {
	f, _, got := start(t)
	// The first upstream (port 1) refuses: the second answers.
	for _, network := range []string{"udp", "tcp"} {
		r := resolver(f.Addr().String(), network)
		addrs, err := r.LookupNetIP(context.Background(), "ip4", "api.example.test")
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		if len(addrs) != 2 || addrs[0].String() != "192.0.2.10" {
			t.Fatalf("%s: %v", network, addrs)
		}
	}
	l := got()
	if len(l) != 2 {
		t.Fatalf("learned %d times; want 2 (one per lookup): %+v", len(l), l)
	}
	for _, e := range l {
		if e.src.String() != "127.0.0.1" || !slices.Equal(e.names, []string{"api.example.test"}) || len(e.answers) != 2 || e.answers[0].TTL != time.Minute {
			t.Errorf("learned %+v", e)
		}
	}

	// A CNAME chain: both names, the final addresses, v4 and v6.
	r := resolver(f.Addr().String(), "udp")
	if _, err := r.LookupNetIP(context.Background(), "ip", "www.example.test"); err != nil {
		t.Fatal(err)
	}
	var names []string
	var addrs []string
	for _, e := range got()[2:] {
		names = append(names, e.names...)
		for _, a := range e.answers {
			addrs = append(addrs, a.Addr.String())
		}
	}
	if !slices.Contains(names, "www.example.test") || !slices.Contains(names, "edge.cdn.test") {
		t.Errorf("names %v", names)
	}
	if !slices.Contains(addrs, "198.51.100.5") || !slices.Contains(addrs, "2001:db8::5") {
		t.Errorf("addresses %v", addrs)
	}

	// NXDOMAIN passes through, and learns nothing.
	n := len(got())
	if _, err := r.LookupNetIP(context.Background(), "ip4", "nope.example.test"); err == nil {
		t.Error("nope.example.test resolved")
	} else if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound {
		t.Errorf("want not found: %v", err)
	}
	if len(got()) != n {
		t.Error("an NXDOMAIN reply was learned")
	}
}

func TestParse(t *testing.T) {
	if names, answers := Parse([]byte("garbage")); names != nil || answers != nil {
		t.Errorf("garbage parsed: %v %v", names, answers)
	}
	if _, answers := Parse(nil); answers != nil {
		t.Error("empty parsed")
	}
}

func TestUpstreams(t *testing.T) {
	got := Upstreams("# comment\nnameserver 10.0.0.2\nsearch x\nnameserver ::1\nnameserver bad\n")
	if !slices.Equal(got, []string{"10.0.0.2:53", "[::1]:53"}) {
		t.Errorf("%v", got)
	}
}

func TestNoUpstream(t *testing.T) {
	if err := New(Options{Addr: netip.MustParseAddrPort("127.0.0.1:0")}).Start(context.Background()); err == nil {
		t.Error("started without an upstream")
	}
}

func TestLookup(t *testing.T) {
	_, up, _ := start(t)
	up.SetTTL(42)
	got, err := Lookup(context.Background(), []string{"127.0.0.1:1", up.Addr}, "www.example.test")
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, a := range got {
		addrs = append(addrs, a.Addr.String())
		if a.TTL != 42*time.Second {
			t.Errorf("TTL %s; want 42s", a.TTL)
		}
	}
	slices.Sort(addrs)
	if !slices.Equal(addrs, []string{"198.51.100.5", "2001:db8::5"}) {
		t.Errorf("addresses %v", addrs)
	}
	if _, err := Lookup(context.Background(), []string{up.Addr}, "nope.example.test"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if _, err := Lookup(context.Background(), []string{"127.0.0.1:1"}, "api.example.test"); err == nil {
		t.Error("no upstream answered, yet no error")
	}
}
