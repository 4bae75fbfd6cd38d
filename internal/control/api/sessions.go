package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"
)

func tokenView(t service.TokenInfo) apitypes.TokenView {
	return apitypes.TokenView{ID: t.ID, Name: t.Name, Session: t.Session, Created: t.Created, Expires: t.Expires}
}

func (a *API) registerSessions() {
	type passwordIn struct {
		Name string `path:"name"`
		Body apitypes.PasswordRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-password", Method: http.MethodPut, Path: "/v1/users/{name}/password", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Set a user's console password", Description: "Your own, or anyone's for an admin. Stored as an argon2id hash.",
		Tags: []string{"users"}},
		func(ctx context.Context, in *passwordIn) (*struct{}, error) {
			return nil, asProblem(a, "setting a password", a.o.Service.SetPassword(userOf(ctx), in.Name, in.Body.Password))
		})
	type signInIn struct {
		Body apitypes.SignInRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "sign-in", Method: http.MethodPost, Path: "/v1/sessions",
		DefaultStatus: http.StatusCreated, Summary: "Sign in with a password (the console)",
		Description: "Returns a session token that expires after 12 hours. Failed attempts are logged; after 5 within 5 minutes for a user or an address, the answer is 429 until then.",
		Tags:        []string{"users"}},
		func(ctx context.Context, in *signInIn) (*body[apitypes.SessionView], error) {
			addr, _ := ctx.Value(addrKey).(string)
			tok, exp, err := a.o.Service.SignIn(in.Body.User, in.Body.Password, addr)
			if err != nil {
				return nil, asProblem(a, "signing in", err)
			}
			return &body[apitypes.SessionView]{Body: apitypes.SessionView{Token: tok, Expires: exp}}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "sign-out", Method: http.MethodDelete, Path: "/v1/sessions/current", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "End this console session (its token)", Tags: []string{"users"}},
		func(ctx context.Context, _ *struct{}) (*struct{}, error) {
			tok, _ := ctx.Value(tokenKey).(string)
			return nil, asProblem(a, "signing out", a.o.Service.SignOut(tok))
		})
	huma.Register(a.h, huma.Operation{OperationID: "sign-out-everywhere", Method: http.MethodDelete, Path: "/v1/sessions", Security: bearer,
		Summary: "End every console session of yours", Tags: []string{"users"}},
		func(ctx context.Context, _ *struct{}) (*body[map[string]int], error) {
			n, err := a.o.Service.SignOutEverywhere(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "signing out everywhere", err)
			}
			return &body[map[string]int]{Body: map[string]int{"ended": n}}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "list-tokens", Method: http.MethodGet, Path: "/v1/tokens", Security: bearer,
		Summary: "Your API tokens and console sessions", Tags: []string{"users"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.TokenView], error) {
			ts, err := a.o.Service.Tokens(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "listing tokens", err)
			}
			out := []apitypes.TokenView{}
			for _, t := range ts {
				out = append(out, tokenView(t))
			}
			return &body[[]apitypes.TokenView]{Body: out}, nil
		})
	type tokenIn struct {
		Body apitypes.TokenRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-token", Method: http.MethodPost, Path: "/v1/tokens", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Make an API token", Description: "Its secret is in the answer, once.", Tags: []string{"users"}},
		func(ctx context.Context, in *tokenIn) (*body[apitypes.TokenView], error) {
			tok, t, err := a.o.Service.CreateToken(userOf(ctx), in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "making a token", err)
			}
			v := tokenView(t)
			v.Token = tok
			return &body[apitypes.TokenView]{Body: v}, nil
		})
	type revokeIn struct {
		ID string `path:"id"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "revoke-token", Method: http.MethodDelete, Path: "/v1/tokens/{id}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Revoke one of your API tokens or sessions", Tags: []string{"users"}},
		func(ctx context.Context, in *revokeIn) (*struct{}, error) {
			return nil, asProblem(a, "revoking a token", a.o.Service.RevokeToken(userOf(ctx), strings.ToLower(in.ID)))
		})
}
