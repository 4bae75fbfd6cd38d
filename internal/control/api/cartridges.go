package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/cartridge"
)

func (a *API) cartridgeViews(app *store.App) []apitypes.CartridgeView {
	out := []apitypes.CartridgeView{}
	for _, c := range app.Cartridges {
		v := apitypes.CartridgeView{Name: c.Name, Username: c.User, Password: c.Password, Database: c.Database}
		if ip, port, ok := a.o.Agent.CartridgeAddress(app.Key(), c.Name); ok {
			v.Host, v.Port, v.Running = ip, port, true
			v.URL = cartridge.URL(c.Name, ip, port, cartridge.Credentials{User: c.User, Password: c.Password, Database: c.Database})
		}
		out = append(out, v)
	}
	return out
}

func (a *API) registerCartridges() {
	type addIn struct {
		AppRef
		Body apitypes.AddCartridgeRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-cartridge", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/cartridges", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Add a database cartridge",
		Description: "Runs PostgreSQL or Redis beside the app, in the app's isolation, with its data in the app's data directory; the app restarts with DATABASE_URL / REDIS_URL and the OpenShift variables.",
		Tags:        []string{"cartridges"}},
		func(ctx context.Context, in *addIn) (*body[apitypes.CartridgeView], error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			for _, c := range app.Cartridges {
				if c.Name == in.Body.Name {
					return nil, problem(http.StatusConflict, apitypes.CodeConflict, fmt.Sprintf("%s already has %s: see `gantry cartridge list %s`", app.Name, c.Name, app.Name))
				}
			}
			creds := cartridge.NewCredentials(in.Body.Name, app.Name)
			c := store.Cartridge{Name: in.Body.Name, User: creds.User, Password: creds.Password, Database: creds.Database, Created: time.Now().UTC()}
			if _, _, err := a.o.Agent.AddCartridge(ctx, app.Key(), c); err != nil {
				return nil, problem(http.StatusBadGateway, apitypes.CodeDeployFailed, err.Error())
			}
			if err := a.o.Store.Update(func(tx *store.Tx) error {
				if err := tx.Get(app.Key(), app); err != nil {
					return err
				}
				app.Cartridges = append(app.Cartridges, c)
				return tx.Put(app.Key(), app)
			}); err != nil {
				return nil, a.internal("saving cartridge", err)
			}
			a.log.Info("cartridge added", "app", app.FullName(), "cartridge", c.Name)
			a.restartWeb(ctx, app)
			for _, v := range a.cartridgeViews(app) {
				if v.Name == c.Name {
					return &body[apitypes.CartridgeView]{Body: v}, nil
				}
			}
			return nil, a.internal("reading cartridge", fmt.Errorf("cartridge %s vanished", c.Name))
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-cartridges", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/cartridges", Security: bearer,
		Summary: "An app's cartridges, with connection details", Tags: []string{"cartridges"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.CartridgeView], error) {
			app, err := a.loadApp(ctx, *in)
			if err != nil {
				return nil, err
			}
			return &body[[]apitypes.CartridgeView]{Body: a.cartridgeViews(app)}, nil
		})

	type removeIn struct {
		AppRef
		Name string `path:"name"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-cartridge", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/cartridges/{name}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a cartridge and its data", Tags: []string{"cartridges"}},
		func(ctx context.Context, in *removeIn) (*struct{}, error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			found := false
			var keep []store.Cartridge
			for _, c := range app.Cartridges {
				if c.Name == in.Name {
					found = true
				} else {
					keep = append(keep, c)
				}
			}
			if !found {
				return nil, notFound(apitypes.CodeNotFound, fmt.Sprintf("%s has no cartridge %q (it has %s)", app.Name, in.Name, cartridgeNames(app)))
			}
			if err := a.o.Agent.RemoveCartridge(ctx, app.Key(), in.Name); err != nil {
				return nil, a.internal("removing cartridge", err)
			}
			if err := a.o.Store.Update(func(tx *store.Tx) error {
				if err := tx.Get(app.Key(), app); err != nil {
					return err
				}
				app.Cartridges = keep
				return tx.Put(app.Key(), app)
			}); err != nil {
				return nil, a.internal("saving app", err)
			}
			a.log.Info("cartridge removed", "app", app.FullName(), "cartridge", in.Name)
			a.restartWeb(ctx, app)
			return nil, nil
		})
}

// restartWeb rolls a running app's web gears so that they see the new
// environment.
func (a *API) restartWeb(ctx context.Context, app *store.App) {
	if app.ActiveDeployment == "" || app.Stopped || app.Idle {
		return
	}
	if err := a.o.Agent.Rollout(ctx, app.Key(), app.ActiveDeployment, io.Discard); err != nil {
		a.log.Warn("restarting after a cartridge change", "app", app.FullName(), "err", err)
	}
}

func cartridgeNames(app *store.App) string {
	var n []string
	for _, c := range app.Cartridges {
		n = append(n, c.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}
