package router

import (
	"context"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// follow gives r the routes of st now and after each change, as the
// control side's routes.Publisher does in the server (which the router's
// own tests cannot import: it imports the router). Keep the two mappings
// alike; control/routes tests the real one.
func follow(ctx context.Context, t *testing.T, st *store.Store, r *Router) {
	t.Helper()
	sync := func() {
		var s State
		var rev int64
		err := st.View(func(tx *store.Tx) error {
			rev = st.Rev()
			apps, err := store.ListApps(tx)
			if err != nil {
				return err
			}
			gears, _ := store.ListGears(tx)
			aliases, _ := store.ListAliases(tx)
			certs, _ := store.ListCerts(tx)
			tcp, _ := store.ListTCPRoutes(tx)
			for _, a := range apps {
				s.Apps = append(s.Apps, App{Key: a.Key(), Name: a.FullName(), Host: a.Host, Stopped: a.Stopped, Idle: a.Idle,
					HTTPS: a.HTTPS, ConnectTimeout: a.ConnectTimeout, ReadTimeout: a.ReadTimeout, TunnelTimeout: a.TunnelTimeout})
			}
			for _, g := range gears {
				if g.State == store.GearRunning && g.Service == "" {
					s.Gears = append(s.Gears, Gear{AppKey: g.AppKey, IP: g.IP, Port: g.Port})
				}
			}
			for _, al := range aliases {
				s.Aliases = append(s.Aliases, Alias{Host: al.Host, AppKey: al.AppKey})
			}
			for _, c := range certs {
				s.Certs = append(s.Certs, Cert{Host: c.Host, CertPEM: c.CertPEM, KeyPEM: c.KeyPEM})
			}
			for _, tr := range tcp {
				s.TCPRoutes = append(s.TCPRoutes, TCPSpec{Port: tr.Port, SNI: tr.SNI, AppKey: tr.AppKey, TargetPort: tr.TargetPort})
			}
			return nil
		})
		if err != nil {
			t.Errorf("reading routes: %v", err)
			return
		}
		r.Set(rev, s)
	}
	// The loop ends (cleanups run last-in first-out) before the store
	// the test opened earlier is closed: no sync after the test.
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	watch := st.Watch(ctx)
	sync()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-watch:
				sync()
			}
		}
	}()
}
