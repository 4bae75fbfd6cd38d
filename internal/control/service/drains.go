package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/drain"
)

// MaxDrains is how many drains one app may have.
const MaxDrains = 5

// Drains lists an app's log drains with what this machine shipped to
// them.
func (s *Service) Drains(caller *store.User, domain, name string) ([]apitypes.LogDrainView, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	return s.drainViews(app), nil
}

func (s *Service) drainViews(app *store.App) []apitypes.LogDrainView {
	var st map[string]drain.Status
	if s.o.DrainStatus != nil {
		st = s.o.DrainStatus(app.ID)
	}
	out := []apitypes.LogDrainView{}
	for _, d := range app.Drains {
		v := apitypes.LogDrainView{ID: d.ID, URL: drain.Redact(d.URL), Created: d.Created, State: "not shipping from this machine"}
		if t, err := drain.Parse(d.URL); err == nil {
			v.Kind = t.Kind
		}
		if ds, ok := st[d.ID]; ok {
			v.State, v.Sent, v.Dropped, v.Buffered, v.LastError = ds.State, ds.Sent, ds.Dropped, ds.Buffered, ds.LastError
		}
		out = append(out, v)
	}
	return out
}

// AddDrain adds a log drain to an app once it is reached: syslog://,
// syslog+tls:// or https://.
func (s *Service) AddDrain(ctx context.Context, caller *store.User, domain, name, rawURL string) (apitypes.LogDrainView, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return apitypes.LogDrainView{}, err
	}
	t, err := drain.Parse(rawURL)
	if err != nil {
		return apitypes.LogDrainView{}, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if len(app.Drains) >= MaxDrains {
		return apitypes.LogDrainView{}, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("%s has %d drains, the most an app may have: remove one first", app.Name, MaxDrains))
	}
	if slices.ContainsFunc(app.Drains, func(d store.Drain) bool { return d.URL == t.URL }) {
		return apitypes.LogDrainView{}, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("%s already drains to %s", app.Name, drain.Redact(t.URL)))
	}
	if err := drain.Check(ctx, t, s.o.DrainPolicy, s.o.DrainTLS); err != nil {
		return apitypes.LogDrainView{}, refuse(Invalid, apitypes.CodeInvalid, err.Error()+": check the address, or that the drain accepts connections from this server")
	}
	id := make([]byte, 4)
	rand.Read(id)
	d := store.Drain{ID: hex.EncodeToString(id), URL: t.URL, Created: time.Now().UTC()}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Drains = append(app.Drains, d)
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return apitypes.LogDrainView{}, fmt.Errorf("saving the drain: %w", err)
	}
	s.log.Info("drain added", "app", app.FullName(), "drain", d.ID, "url", drain.Redact(d.URL), "user", caller.Name)
	return apitypes.LogDrainView{ID: d.ID, URL: drain.Redact(d.URL), Kind: t.Kind, Created: d.Created, State: "connecting"}, nil
}

// RemoveDrain removes an app's drain; what it had buffered is dropped.
func (s *Service) RemoveDrain(caller *store.User, domain, name, id string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(app.Drains, func(d store.Drain) bool { return d.ID == id }) {
		return refuse(NotFound, "drain_not_found", fmt.Sprintf("%s has no drain %q: see `gantry drain list %s`", app.Name, id, app.Name))
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Drains = slices.DeleteFunc(app.Drains, func(d store.Drain) bool { return d.ID == id })
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return fmt.Errorf("removing the drain: %w", err)
	}
	s.log.Info("drain removed", "app", app.FullName(), "drain", id, "user", caller.Name)
	return nil
}
