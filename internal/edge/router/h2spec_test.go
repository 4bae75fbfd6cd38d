package router

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/summerwind/h2spec/config"
	"github.com/summerwind/h2spec/generic"
	"github.com/summerwind/h2spec/hpack"
	"github.com/summerwind/h2spec/http2"
	"github.com/summerwind/h2spec/spec"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// knownH2Deviations are h2spec cases the router's HTTP/2 server (package
// h2) does not pass, each with why. Any other failure fails the test, and
// so does one of these passing (then drop it). x/net/http2's server,
// which the router used before, had four (golang/go#25023, #56760,
// #26321 twice); this one has none.
var knownH2Deviations = map[string]string{}

// TestH2Spec runs the h2spec HTTP/2 conformance suite (generic, RFC 7540
// and HPACK sections) against the router's TLS port, in front of an app.
func TestH2Spec(t *testing.T) {
	r, st, _ := newTLSRouter(t, nil)
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{{Name: "blog", Domain: "acme", Host: "localhost"}}, map[string]string{"g1": a})
	port := r.TLSAddr().(*net.TCPAddr).Port
	c := &config.Config{Host: "localhost", Port: port, Path: "/", Timeout: 2 * time.Second, MaxHeaderLen: 4000, TLS: true, Insecure: true}
	var failed, passedKnown []string
	total := 0
	var walk func(g *spec.TestGroup)
	walk = func(g *spec.TestGroup) {
		for i, tc := range g.Tests {
			if tc.Result == nil {
				continue
			}
			total++
			id := fmt.Sprintf("%s/%d", g.ID(), i+1)
			_, known := knownH2Deviations[id]
			switch {
			case tc.Result.Failed && !known:
				failed = append(failed, fmt.Sprintf("%s %s: %v", id, tc.Desc, tc.Result.Error))
			case !tc.Result.Failed && known:
				passedKnown = append(passedKnown, id)
			}
		}
		for _, sub := range g.Groups {
			walk(sub)
		}
	}
	for _, s := range []*spec.TestGroup{generic.Spec(), http2.Spec(), hpack.Spec()} {
		s.Test(c)
		walk(s)
	}
	sort.Strings(failed)
	if total < 140 {
		t.Errorf("h2spec ran %d cases; want the whole suite (145)", total)
	}
	if len(failed) > 0 {
		t.Errorf("%d h2spec cases failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	if len(passedKnown) > 0 {
		t.Errorf("known deviations now pass, remove them from knownH2Deviations: %v", passedKnown)
	}
	t.Logf("h2spec: %d cases, %d known upstream deviations", total, len(knownH2Deviations))
}
