package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	egressrouter "github.com/gantry-paas/gantry/internal/egress/router"
)

// TestEgressForbiddenFollowsHostAddresses: an address that comes up on
// the host after the start becomes one the egress router never dials, and
// stops being one when it goes.
func TestEgressForbiddenFollowsHostAddresses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: adds a link with an address to the host (CI runs as root)")
	}
	subnet := netip.MustParsePrefix("10.239.0.0/24")
	r := egressrouter.New(egressrouter.Options{Addr: netip.MustParseAddr("127.0.0.1"), Forbidden: forbiddenNets(subnet)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		followHostAddrs(ctx, slog.Default(), func() { r.SetForbidden(forbiddenNets(subnet)) })
		close(done)
	}()
	defer func() { cancel(); <-done }()

	link := fmt.Sprintf("gfa%d", os.Getpid()%100000)
	addr := netip.MustParseAddr("198.18.123.1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", link).Run() })
	if r.Forbidden(addr) {
		t.Fatal("setup: the address is forbidden before it exists")
	}
	for _, args := range [][]string{
		{"link", "add", link, "type", "veth", "peer", "name", link + "p"},
		{"addr", "add", addr.String() + "/32", "dev", link},
		{"link", "set", link, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	waitFor := func(what string, want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for r.Forbidden(addr) != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if r.Forbidden(addr) != want {
			t.Fatalf("%s: Forbidden(%s) = %v", what, addr, !want)
		}
	}
	waitFor("an address added after the start", true)
	exec.Command("ip", "link", "del", link).Run()
	waitFor("the address removed", false)
}
