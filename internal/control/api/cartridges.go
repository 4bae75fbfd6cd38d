package api

import (
	"context"
	"fmt"
	"net/http"

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
			app, err := a.o.Service.AddCartridge(ctx, userOf(ctx), in.Domain, in.App, in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "adding cartridge", err)
			}
			for _, v := range a.cartridgeViews(app) {
				if v.Name == in.Body.Name {
					return &body[apitypes.CartridgeView]{Body: v}, nil
				}
			}
			return nil, a.internal("reading cartridge", fmt.Errorf("cartridge %s vanished", in.Body.Name))
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
			return nil, asProblem(a, "removing cartridge", a.o.Service.RemoveCartridge(ctx, userOf(ctx), in.Domain, in.App, in.Name))
		})
}
