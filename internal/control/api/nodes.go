package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"
	"github.com/gantry-paas/gantry/internal/control/store"
)

func nodeView(n service.NodeStatus) apitypes.NodeView {
	state := "down"
	switch {
	case n.Up && n.Cordoned:
		state = "cordoned"
	case n.Up:
		state = "up"
	}
	overlay := n.Overlay
	if overlay == "" {
		overlay = "none"
	}
	return apitypes.NodeView{Name: n.Name, Address: n.Address, Roles: n.Roles, State: state, Gears: n.Gears,
		MemoryUsed: n.MemoryUsed, MemoryTotal: n.MemoryTotal, Isolation: n.Isolation, Overlay: overlay,
		Version: n.Version, Joined: n.Joined, Started: n.Started}
}

func (a *API) registerNodes() {
	huma.Register(a.h, huma.Operation{OperationID: "list-nodes", Method: http.MethodGet, Path: "/v1/nodes", Security: bearer,
		Summary: "List nodes (admin)", Description: "The machines of the platform: address, roles, state, gears and memory.", Tags: []string{"nodes"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.NodeView], error) {
			ns, err := a.o.Service.Nodes(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "listing nodes", err)
			}
			out := []apitypes.NodeView{}
			for _, n := range ns {
				out = append(out, nodeView(n))
			}
			return &body[[]apitypes.NodeView]{Body: out}, nil
		})

	type nodeName struct {
		Name string `path:"name" doc:"node name"`
	}
	cordon := func(on bool) func(ctx context.Context, in *nodeName) (*body[apitypes.NodeView], error) {
		return func(ctx context.Context, in *nodeName) (*body[apitypes.NodeView], error) {
			if _, err := a.o.Service.Cordon(userOf(ctx), in.Name, on); err != nil {
				return nil, asProblem(a, "cordoning node", err)
			}
			ns, err := a.o.Service.Nodes(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "listing nodes", err)
			}
			for _, n := range ns {
				if n.Name == in.Name {
					return &body[apitypes.NodeView]{Body: nodeView(n)}, nil
				}
			}
			return nil, asProblem(a, "cordoning node", store.ErrNotFound)
		}
	}
	huma.Register(a.h, huma.Operation{OperationID: "cordon-node", Method: http.MethodPost, Path: "/v1/nodes/{name}/cordon", Security: bearer,
		Summary: "Cordon a node (admin)", Description: "The node gets no new gears; those it runs stay.", Tags: []string{"nodes"}}, cordon(true))
	huma.Register(a.h, huma.Operation{OperationID: "uncordon-node", Method: http.MethodPost, Path: "/v1/nodes/{name}/uncordon", Security: bearer,
		Summary: "Uncordon a node (admin)", Tags: []string{"nodes"}}, cordon(false))
	huma.Register(a.h, huma.Operation{OperationID: "remove-node", Method: http.MethodDelete, Path: "/v1/nodes/{name}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a node that is down (admin)", Tags: []string{"nodes"}},
		func(ctx context.Context, in *nodeName) (*struct{}, error) {
			if err := a.o.Service.RemoveNode(userOf(ctx), in.Name); err != nil {
				return nil, asProblem(a, "removing node", err)
			}
			return nil, nil
		})
}
