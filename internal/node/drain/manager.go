package drain

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

// Options configure a manager.
type Options struct {
	Store  *store.Store
	Layout layout.Layout
	Node   string // this machine: the syslog HOSTNAME
	Policy Policy
	Roots  *tls.Config
	Buffer int // lines per drain (default 10000)
	// MinRetry and MaxRetry bound each drain's back-off.
	MinRetry, MaxRetry time.Duration
	Log                *slog.Logger
}

// Manager follows the apps' drains in the store and ships this machine's
// lines of each app (its gears' log files and its router's access lines)
// to them.
type Manager struct {
	o    Options
	mu   sync.Mutex
	apps map[string]*appShip // app ID → what ships its lines
	// byName finds an app by DOMAIN/APP (router access lines).
	byName map[string]*appShip
	gears  map[string]string // gear ID → process, for log lines
	// drained is byName's keys, read without a lock per request.
	drained atomic.Pointer[map[string]bool]
}

type appShip struct {
	name   string
	sinks  map[string]*shipSink // drain ID → sink
	cancel context.CancelFunc   // the log follower
}

type shipSink struct {
	url    string
	sink   *Sink
	cancel context.CancelFunc
}

// New makes a manager; Run ships.
func New(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{o: o, apps: map[string]*appShip{}, byName: map[string]*appShip{}, gears: map[string]string{}}
}

// Run follows the store until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer m.stopAll()
	rev := int64(-1)
	for {
		if r := m.o.Store.Rev(); r != rev {
			rev = r
			m.sync(ctx, &wg)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// sync starts and stops followers and sinks to match the apps' drains.
func (m *Manager) sync(ctx context.Context, wg *sync.WaitGroup) {
	var apps []store.App
	gears := map[string]string{}
	if err := m.o.Store.View(func(tx *store.Tx) error {
		var err error
		if apps, err = store.ListApps(tx); err != nil {
			return err
		}
		gs, err := store.ListGears(tx)
		for _, g := range gs {
			gears[g.ID] = g.Kind()
		}
		return err
	}); err != nil {
		m.o.Log.Warn("reading the apps' drains", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.gears) > 50000 {
		clear(m.gears)
	}
	for id, k := range gears {
		m.gears[id] = k // kept after the gear goes: its last lines still come
	}
	want := map[string]bool{}
	for _, a := range apps {
		if len(a.Drains) == 0 {
			continue
		}
		want[a.ID] = true
		as := m.apps[a.ID]
		if as == nil {
			as = &appShip{name: a.FullName(), sinks: map[string]*shipSink{}}
			fctx, cancel := context.WithCancel(ctx)
			as.cancel = cancel
			m.apps[a.ID] = as
			dir := m.o.Layout.Logs(a.ID)
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.follow(fctx, dir, as)
			}()
		}
		m.byName[as.name] = as
		keep := map[string]bool{}
		for _, d := range a.Drains {
			keep[d.ID] = true
			if ss, ok := as.sinks[d.ID]; ok && ss.url == d.URL {
				continue
			} else if ok {
				ss.cancel()
			}
			t, err := Parse(d.URL)
			if err != nil {
				m.o.Log.Warn("a drain that does not parse", "app", as.name, "drain", d.ID, "err", err)
				continue
			}
			sctx, cancel := context.WithCancel(ctx)
			s := NewSink(t, SinkOptions{Policy: m.o.Policy, Roots: m.o.Roots, Buffer: m.o.Buffer, MinRetry: m.o.MinRetry, MaxRetry: m.o.MaxRetry})
			as.sinks[d.ID] = &shipSink{url: d.URL, sink: s, cancel: cancel}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Run(sctx)
			}()
		}
		for id, ss := range as.sinks {
			if !keep[id] {
				ss.cancel()
				delete(as.sinks, id)
			}
		}
	}
	for id, as := range m.apps {
		if !want[id] {
			as.cancel()
			for _, ss := range as.sinks {
				ss.cancel()
			}
			delete(m.apps, id)
			delete(m.byName, as.name)
		}
	}
	names := map[string]bool{}
	for n := range m.byName {
		names[n] = true
	}
	m.drained.Store(&names)
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, as := range m.apps {
		as.cancel()
		for _, ss := range as.sinks {
			ss.cancel()
		}
	}
}

// follow ships the lines appended to the app's log files on this machine
// from now on.
func (m *Manager) follow(ctx context.Context, dir string, as *appShip) {
	for ctx.Err() == nil {
		if _, err := os.Stat(dir); err == nil {
			applog.Follow(ctx, dir, func(l applog.Line) error {
				proc := l.Process
				if proc == "" {
					m.mu.Lock()
					proc = m.gears[l.Gear]
					m.mu.Unlock()
					if proc == "" {
						proc = "web"
					}
				}
				m.ship(as, Line{Time: l.Time, App: as.name, Process: proc, Gear: l.Gear, Stream: l.Stream, Text: l.Text, Host: m.o.Node})
				return nil
			})
			return
		}
		select { // no gear of the app here yet
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func (m *Manager) ship(as *appShip, l Line) {
	m.mu.Lock()
	sinks := make([]*Sink, 0, len(as.sinks))
	for _, ss := range as.sinks {
		sinks = append(sinks, ss.sink)
	}
	m.mu.Unlock()
	for _, s := range sinks {
		s.Send(l)
	}
}

// Drained reports whether an app (DOMAIN/APP) has drains: the router
// hands those apps' access lines to Access.
func (m *Manager) Drained(app string) bool {
	d := m.drained.Load()
	return d != nil && (*d)[app]
}

// Access ships one access line of the router for an app (DOMAIN/APP).
func (m *Manager) Access(app string, line []byte) {
	m.mu.Lock()
	as := m.byName[app]
	m.mu.Unlock()
	if as == nil {
		return
	}
	m.ship(as, Line{Time: time.Now().UTC(), App: app, Process: "router", Stream: "access", Text: string(line), Host: m.o.Node})
}

// Status reports this machine's sinks of an app by drain ID.
func (m *Manager) Status(appID string) map[string]Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Status{}
	if as := m.apps[appID]; as != nil {
		for id, ss := range as.sinks {
			out[id] = ss.sink.Status()
		}
	}
	return out
}
