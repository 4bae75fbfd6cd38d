package service

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/cartridge"
)

// AddCartridge runs an add-on (node/cartridge) beside the app, in its
// isolation, and restarts its web gears with the new variables.
func (s *Service) AddCartridge(ctx context.Context, caller *store.User, domain, name, cart string) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	for _, c := range app.Cartridges {
		if c.Name == cart {
			return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("%s already has %s: see `gantry cartridge list %s`", app.Name, c.Name, app.Name))
		}
	}
	creds := cartridge.NewCredentials(cart, app.Name)
	c := store.Cartridge{Name: cart, User: creds.User, Password: creds.Password, Database: creds.Database, Created: time.Now().UTC()}
	if _, _, err := s.o.Agent.AddCartridge(ctx, app.Key(), c); err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, err.Error())
	}
	if err := s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Cartridges = append(app.Cartridges, c)
		return tx.Put(app.Key(), app)
	}); err != nil {
		return nil, fmt.Errorf("saving cartridge: %w", err)
	}
	s.log.Info("cartridge added", "app", app.FullName(), "cartridge", c.Name)
	s.restartWeb(ctx, app)
	return app, nil
}

// RemoveCartridge stops an add-on, removes its data and restarts the web
// gears without its variables.
func (s *Service) RemoveCartridge(ctx context.Context, caller *store.User, domain, name, cart string) error {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return err
	}
	found := false
	var keep, all []store.Cartridge
	for _, c := range app.Cartridges {
		all = append(all, c)
		if c.Name == cart {
			found = true
		} else {
			keep = append(keep, c)
		}
	}
	if !found {
		var names []string
		for _, c := range all {
			names = append(names, c.Name)
		}
		has := strings.Join(names, ", ")
		if has == "" {
			has = "none"
		}
		return refuse(NotFound, apitypes.CodeNotFound, fmt.Sprintf("%s has no cartridge %q (it has %s)", app.Name, cart, has))
	}
	if err := s.o.Agent.RemoveCartridge(ctx, app.Key(), cart); err != nil {
		return fmt.Errorf("removing cartridge: %w", err)
	}
	if err := s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Cartridges = keep
		return tx.Put(app.Key(), app)
	}); err != nil {
		return fmt.Errorf("saving app: %w", err)
	}
	s.log.Info("cartridge removed", "app", app.FullName(), "cartridge", cart)
	s.restartWeb(ctx, app)
	return nil
}

// restartWeb rolls a running app's web gears so that they see the new
// environment.
func (s *Service) restartWeb(ctx context.Context, app *store.App) {
	if app.ActiveDeployment == "" || app.Stopped || app.Idle {
		return
	}
	if err := s.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, io.Discard); err != nil {
		s.log.Warn("restarting after a cartridge change", "app", app.FullName(), "err", err)
	}
}
