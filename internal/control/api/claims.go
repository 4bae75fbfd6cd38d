package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// DNS-name claims: the rules are control/service's (claims.go).

func (a *API) registerClaims() {
	type claimIn struct {
		Body apitypes.ClaimRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "claim-name", Method: http.MethodPost, Path: "/v1/claims", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Prove you control a DNS name",
		Description: "Looks for the TXT record `_gantry-challenge.NAME` with the value `gantry-verify=TOKEN` (GET /v1/claims/challenge gives both). Found: the name and the names under it are yours to use as aliases. Not found: 409 with what to publish.", Tags: []string{"routing"}},
		func(ctx context.Context, in *claimIn) (*body[apitypes.ClaimView], error) {
			c, err := a.o.Service.Claim(ctx, userOf(ctx), in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "claiming a name", err)
			}
			return &body[apitypes.ClaimView]{Body: apitypes.ClaimView(c)}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "claim-challenge", Method: http.MethodGet, Path: "/v1/claims/challenge", Security: bearer,
		Summary: "What to publish to claim a DNS name", Tags: []string{"routing"}},
		func(ctx context.Context, in *struct {
			Name string `query:"name" required:"true"`
		}) (*body[apitypes.ClaimChallenge], error) {
			v, err := a.o.Service.ClaimChallenge(userOf(ctx), in.Name)
			if err != nil {
				return nil, asProblem(a, "a claim's challenge", err)
			}
			return &body[apitypes.ClaimChallenge]{Body: v}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-claims", Method: http.MethodGet, Path: "/v1/claims", Security: bearer,
		Summary: "Your claimed DNS names (all of them for an admin)", Tags: []string{"routing"}},
		func(ctx context.Context, in *struct{}) (*body[[]apitypes.ClaimView], error) {
			claims, err := a.o.Service.Claims(userOf(ctx))
			if err != nil {
				return nil, a.internal("listing claims", err)
			}
			out := []apitypes.ClaimView{}
			for _, c := range claims {
				out = append(out, apitypes.ClaimView(c))
			}
			return &body[[]apitypes.ClaimView]{Body: out}, nil
		})

	type grantIn struct {
		Body apitypes.ClaimGrant
	}
	huma.Register(a.h, huma.Operation{OperationID: "grant-claim", Method: http.MethodPost, Path: "/v1/admin/claims", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Give a user a DNS name without a TXT record", Description: "Admins only. Replaces another user's claim of the same name.", Tags: []string{"admin"}},
		func(ctx context.Context, in *grantIn) (*body[apitypes.ClaimView], error) {
			c, err := a.o.Service.GrantClaim(userOf(ctx), in.Body.User, in.Body.Name)
			if err != nil {
				return nil, asProblem(a, "granting a claim", err)
			}
			return &body[apitypes.ClaimView]{Body: apitypes.ClaimView(c)}, nil
		})
}
