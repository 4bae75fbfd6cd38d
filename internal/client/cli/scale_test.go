package cli

import (
	"testing"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func TestGearCountsSayDrainingApart(t *testing.T) {
	gears := []apitypes.GearView{{State: "running"}, {State: "draining"}, {State: "starting"}, {State: "draining"}}
	serving, draining := gearCounts(gears)
	if serving != 2 || draining != 2 {
		t.Fatalf("serving %d, draining %d; want 2, 2", serving, draining)
	}
	if got := plural(1, "gear") + " / " + plural(2, "gear"); got != "1 gear / 2 gears" {
		t.Fatalf("plural: %q", got)
	}
}
