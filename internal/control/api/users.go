package api

import (
	"context"
	"net/http"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
)

type body[T any] struct{ Body T }

func userView(u *store.User) apitypes.UserView {
	return apitypes.UserView{Name: u.Name, Admin: u.Admin, Created: u.Created}
}

func (a *API) registerUsers() {
	huma.Register(a.h, huma.Operation{OperationID: "health", Method: http.MethodGet, Path: "/healthz",
		Summary: "Health check", Description: "Answers 200 when the server is up. Needs no token.", Tags: []string{"platform"}},
		func(ctx context.Context, _ *struct{}) (*body[map[string]string], error) {
			return &body[map[string]string]{Body: map[string]string{"status": "ok"}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "info", Method: http.MethodGet, Path: "/v1/info", Security: bearer,
		Summary: "Platform and caller", Description: "The platform's version, cloud domain and SSH host keys, and who the token belongs to.", Tags: []string{"platform"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.InfoView], error) {
			return &body[apitypes.InfoView]{Body: apitypes.InfoView{Version: a.o.Version, CloudDomain: a.o.CloudDomain,
				User: userView(userOf(ctx)), SSHHostKeys: a.o.SSHHostKeys}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-users", Method: http.MethodGet, Path: "/v1/users", Security: bearer,
		Summary: "List users (admin)", Tags: []string{"users"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.UserView], error) {
			us, err := a.o.Service.Users(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "listing users", err)
			}
			out := []apitypes.UserView{}
			for i := range us {
				out = append(out, userView(&us[i]))
			}
			return &body[[]apitypes.UserView]{Body: out}, nil
		})

	type createUser struct {
		Body apitypes.CreateUserRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-user", Method: http.MethodPost, Path: "/v1/users", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Create a user (admin)", Description: "Returns the new user's API token, once.", Tags: []string{"users"}},
		func(ctx context.Context, in *createUser) (*body[apitypes.NewUserView], error) {
			u, tok, err := a.o.Service.CreateUser(userOf(ctx), in.Body.Name, in.Body.Admin)
			if err != nil {
				return nil, asProblem(a, "creating user", err)
			}
			return &body[apitypes.NewUserView]{Body: apitypes.NewUserView{UserView: userView(&u), Token: tok}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-sshkeys", Method: http.MethodGet, Path: "/v1/sshkeys", Security: bearer,
		Summary: "List your SSH keys", Tags: []string{"sshkeys"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.SSHKeyView], error) {
			keys, err := a.o.Service.SSHKeys(userOf(ctx))
			if err != nil {
				return nil, a.internal("listing keys", err)
			}
			out := []apitypes.SSHKeyView{}
			for _, k := range keys {
				out = append(out, apitypes.SSHKeyView{Name: k.Name, Fingerprint: k.Fingerprint, Type: k.Type, Created: k.Created})
			}
			return &body[[]apitypes.SSHKeyView]{Body: out}, nil
		})

	type addKey struct {
		Body apitypes.AddSSHKeyRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-sshkey", Method: http.MethodPost, Path: "/v1/sshkeys", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Add an SSH key", Tags: []string{"sshkeys"}},
		func(ctx context.Context, in *addKey) (*body[apitypes.SSHKeyView], error) {
			k, err := a.o.Service.AddSSHKey(userOf(ctx), in.Body.Key, in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "adding key", err)
			}
			return &body[apitypes.SSHKeyView]{Body: apitypes.SSHKeyView{Name: k.Name, Fingerprint: k.Fingerprint, Type: k.Type, Created: k.Created}}, nil
		})

	type keyRef struct {
		Name string `path:"name" doc:"Key name or fingerprint"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-sshkey", Method: http.MethodDelete, Path: "/v1/sshkeys/{name}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove an SSH key", Tags: []string{"sshkeys"}},
		func(ctx context.Context, in *keyRef) (*struct{}, error) {
			return nil, asProblem(a, "removing key", a.o.Service.RemoveSSHKey(userOf(ctx), in.Name))
		})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
