// Package events is an app's event log: deploys' scale changes, autoscaler
// decisions, idle and wake, port scans. Each event is a store record (the
// last 100 of an app kept), a log line and a call of the Log's hook (for
// metrics). It decides nothing.
package events

import (
	"log/slog"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Event kinds.
const (
	ScaleUp    = "scale_up"
	ScaleDown  = "scale_down"
	Idle       = "idle"
	Wake       = "wake"
	Manual     = "manual"
	PortScan   = "port_scan"
	Moved      = "moved"   // gears of a lost machine started elsewhere
	FailedSufx = "_failed" // appended to a kind whose change failed
)

// Scaling are the kinds of the scaling decisions (gantry_scale_events_total).
var Scaling = []string{ScaleUp, ScaleDown, Idle, Wake, Manual, Moved}

// Keep is how many events of an app are kept.
const Keep = 100

// Log records events.
type Log struct {
	st  *store.Store
	log *slog.Logger
	on  func(app *store.App, e store.Event)
}

// New returns a log writing to st; on, if set, is told of every event.
func New(st *store.Store, log *slog.Logger, on func(app *store.App, e store.Event)) *Log {
	if log == nil {
		log = slog.Default()
	}
	return &Log{st: st, log: log.With("component", "events"), on: on}
}

// Record stores an event of app (now, unless e.Time is set).
func (l *Log) Record(app *store.App, e store.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	l.log.Info("app event", "app", app.FullName(), "kind", e.Kind, "from", e.From, "to", e.To, "reason", e.Reason)
	err := l.st.Update(func(tx *store.Tx) error {
		if err := tx.Put(store.EventKey(app.ID, e.Time), &e); err != nil {
			return err
		}
		return store.TrimEvents(tx, app.ID, Keep)
	})
	if err != nil {
		l.log.Error("recording event", "app", app.FullName(), "err", err)
	}
	if l.on != nil {
		l.on(app, e)
	}
}

// List returns an app's events, oldest first.
func List(st *store.Store, appID string) ([]store.Event, error) {
	var out []store.Event
	err := st.View(func(tx *store.Tx) error {
		var err error
		out, err = store.ListEvents(tx, appID)
		return err
	})
	return out, err
}
