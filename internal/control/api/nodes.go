package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

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
	leads := n.Leads
	if leads == nil {
		leads = []string{}
	}
	return apitypes.NodeView{Name: n.Name, Address: n.Address, Roles: n.Roles, State: state, Leads: leads, Gears: n.Gears,
		MemoryUsed: n.MemoryUsed, MemoryTotal: n.MemoryTotal, Isolation: n.Isolation, Overlay: overlay, GearBlock: n.GearBlock,
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
	huma.Register(a.h, huma.Operation{OperationID: "drain-node", Method: http.MethodPost, Path: "/v1/nodes/{name}/drain", Security: bearer,
		Summary: "Drain a node (admin)", Description: "Cordons the node and moves every app's web gears to the other machines, each without dropping a request. Cartridges stay with their data.", Tags: []string{"nodes"}},
		func(ctx context.Context, in *nodeName) (*body[apitypes.DrainView], error) {
			res, err := a.o.Service.DrainNode(ctx, userOf(ctx), in.Name, io.Discard)
			if err != nil {
				return nil, asProblem(a, "draining node", err)
			}
			v := apitypes.DrainView{Node: in.Name, Moved: res.Moved, Stayed: res.Stayed}
			if v.Stayed == nil {
				v.Stayed = []string{}
			}
			return &body[apitypes.DrainView]{Body: v}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "remove-node", Method: http.MethodDelete, Path: "/v1/nodes/{name}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove a node that is down (admin)", Tags: []string{"nodes"}},
		func(ctx context.Context, in *nodeName) (*struct{}, error) {
			if err := a.o.Service.RemoveNode(userOf(ctx), in.Name); err != nil {
				return nil, asProblem(a, "removing node", err)
			}
			return nil, nil
		})
}

func (a *API) registerJoin() {
	type newToken struct {
		Body apitypes.JoinTokenRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-join-token", Method: http.MethodPost, Path: "/v1/nodes/tokens", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Make a join token (admin)",
		Description: "A single-use token with which one machine joins the cluster before it expires. Shown once.", Tags: []string{"nodes"}},
		func(ctx context.Context, in *newToken) (*body[apitypes.JoinTokenView], error) {
			var ttl time.Duration
			if in.Body.TTL != "" {
				d, err := time.ParseDuration(in.Body.TTL)
				if err != nil {
					return nil, problem(http.StatusBadRequest, apitypes.CodeInvalid, fmt.Sprintf("ttl %q: a duration such as 30m or 24h", in.Body.TTL))
				}
				ttl = d
			}
			root := ""
			if a.o.CAView != nil {
				root = a.o.CAView.SHA256
			}
			tok, exp, err := a.o.Service.NewJoinToken(userOf(ctx), ttl, root)
			if err != nil {
				return nil, asProblem(a, "making a join token", err)
			}
			cmd := fmt.Sprintf("gantry server --join %s --token %s --advertise ADDRESS_OF_THE_NEW_MACHINE", a.o.JoinURL, tok)
			return &body[apitypes.JoinTokenView]{Body: apitypes.JoinTokenView{Token: tok, Expires: exp, Command: cmd}}, nil
		})

	type join struct {
		Body apitypes.JoinRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "join", Method: http.MethodPost, Path: "/v1/cluster/join",
		Summary:     "Join the cluster (a machine, with a join token)",
		Description: "Needs no API token: the join token is the credential, used up by this call. The answer holds the cluster's CA files and platform key: only ever over HTTPS.",
		Tags:        []string{"nodes"}},
		func(ctx context.Context, in *join) (*body[apitypes.JoinGrant], error) {
			g, err := a.o.Service.Join(ctx, in.Body)
			if err != nil {
				return nil, asProblem(a, "joining", err)
			}
			return &body[apitypes.JoinGrant]{Body: *g}, nil
		})
}
