package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (a *API) registerDrains() {
	huma.Register(a.h, huma.Operation{OperationID: "list-drains", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/drains", Security: bearer,
		Summary: "List an app's log drains", Description: "With what this machine shipped to each: state, lines sent, dropped and buffered.", Tags: []string{"logs"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.LogDrainView], error) {
			out, err := a.o.Service.Drains(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "listing drains", err)
			}
			return &body[[]apitypes.LogDrainView]{Body: out}, nil
		})

	type addIn struct {
		AppRef
		Body apitypes.LogDrainRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-drain", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/drains", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Add a log drain",
		Description: "Every line of every gear of the app (web, workers, cron, one-off runs, release, cartridges) and the router's access lines for it go to a syslog server (RFC 5424, octet counting, over TCP or TLS) or as JSON batches to an HTTPS endpoint. The drain is connected to once before it is added.",
		Tags:        []string{"logs"}},
		func(ctx context.Context, in *addIn) (*body[apitypes.LogDrainView], error) {
			v, err := a.o.Service.AddDrain(ctx, userOf(ctx), in.Domain, in.App, in.Body.URL)
			if err != nil {
				return nil, asProblem(a, "adding a drain", err)
			}
			return &body[apitypes.LogDrainView]{Body: v}, nil
		})

	type removeIn struct {
		AppRef
		ID string `path:"id"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-drain", Method: http.MethodDelete, Path: "/v1/domains/{domain}/apps/{app}/drains/{id}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a log drain", Tags: []string{"logs"}},
		func(ctx context.Context, in *removeIn) (*struct{}, error) {
			return nil, asProblem(a, "removing a drain", a.o.Service.RemoveDrain(userOf(ctx), in.Domain, in.App, in.ID))
		})
}
