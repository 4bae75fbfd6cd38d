package events

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// An app keeps its last Keep events, oldest first; the hook sees each.
func TestRecordKeepsTheLastEvents(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seen := map[string]int{}
	l := New(st, nil, func(_ *store.App, e store.Event) { seen[e.Kind]++ })
	app := &store.App{ID: "a1", Name: "blog", Domain: "acme"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range Keep + 5 {
		l.Record(app, store.Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: ScaleUp, To: i})
	}
	l.Record(app, store.Event{Time: t0.Add(time.Hour), Kind: PortScan, Reason: "12 destinations"})
	evs, err := List(st, app.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != Keep || evs[0].To != 6 || evs[len(evs)-1].Kind != PortScan {
		t.Errorf("got %d events, first to=%d, last %q; want %d, first to=6, last port_scan", len(evs), evs[0].To, evs[len(evs)-1].Kind, Keep)
	}
	if seen[ScaleUp] != Keep+5 || seen[PortScan] != 1 {
		t.Errorf("hook saw %v", seen)
	}
}
