package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// Proof of a DNS name before its hostnames become aliases. On a platform
// with several users, an alias is only added under a name its user has
// claimed: by publishing a TXT record (_gantry-challenge.NAME with
// gantry-verify=TOKEN, the token derived from the user and the name, so
// one user's record never verifies another) or by an admin's grant. A
// claim covers the name and every name under it; a name is claimed by one
// user. Admins' own aliases need no claim (they run the platform).

// Verification policies (--alias-verification).
const (
	VerifyAuto = "auto" // required once the platform has more than one user
	VerifyDNS  = "dns"  // always required
	VerifyOff  = "off"  // never
)

// ClaimToken is what user publishes to prove name.
func ClaimToken(user, name string) string {
	sum := sha256.Sum256([]byte("gantry-claim|" + user + "|" + name))
	return hex.EncodeToString(sum[:16])
}

// ClaimRecord is the TXT record that proves name.
func ClaimRecord(name string) string { return "_gantry-challenge." + name }

// verificationRequired says whether u's aliases need a claim.
func (a *API) verificationRequired(tx *store.Tx, u *store.User) (bool, error) {
	if u.Admin {
		return false, nil
	}
	switch a.o.AliasVerification {
	case VerifyOff:
		return false, nil
	case VerifyDNS:
		return true, nil
	}
	users, err := store.ListUsers(tx)
	return len(users) > 1, err
}

// claimFor finds u's claim that covers host (itself or a parent; for a
// wildcard, the name under the *.).
func claimFor(tx *store.Tx, user, host string) (*store.NameClaim, error) {
	name := strings.TrimPrefix(host, "*.")
	for n := name; strings.Contains(n, "."); n = parentOf(n) {
		var c store.NameClaim
		err := tx.Get(store.ClaimKey(n), &c)
		if err == nil && c.Owner == user {
			return &c, nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return nil, nil
}

// claimConflict is the reason user may not claim name: someone else claims
// it, a name above it or one under it.
func claimConflict(tx *store.Tx, user, name string) (string, error) {
	claims, err := store.ListClaims(tx)
	if err != nil {
		return "", err
	}
	for _, c := range claims {
		if c.Owner == user {
			continue
		}
		if c.Name == name || strings.HasSuffix(name, "."+c.Name) || strings.HasSuffix(c.Name, "."+name) {
			return fmt.Sprintf("%s is claimed by another user (%s): a name and the names under it belong to one user; an admin can change that", name, c.Name), nil
		}
	}
	return "", nil
}

func (a *API) lookupTXT(ctx context.Context, name string) ([]string, error) {
	r := net.DefaultResolver
	if a.o.DNSResolver != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, a.o.DNSResolver)
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return r.LookupTXT(ctx, name)
}

func (a *API) registerClaims() {
	type claimIn struct {
		Body apitypes.ClaimRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "claim-name", Method: http.MethodPost, Path: "/v1/claims", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Prove you control a DNS name",
		Description: "Looks for the TXT record `_gantry-challenge.NAME` with the value `gantry-verify=TOKEN` (GET /v1/claims/challenge gives both). Found: the name and the names under it are yours to use as aliases. Not found: 409 with what to publish.", Tags: []string{"routing"}},
		func(ctx context.Context, in *claimIn) (*body[apitypes.ClaimView], error) {
			u := userOf(ctx)
			name, err := names.Alias(in.Body.Name, a.o.CloudDomain)
			if err != nil || strings.HasPrefix(name, "*") {
				return nil, invalid(fmt.Sprintf("%q: claim a DNS name such as example.com (no wildcard)", in.Body.Name))
			}
			want := "gantry-verify=" + ClaimToken(u.Name, name)
			txts, lerr := a.lookupTXT(ctx, ClaimRecord(name))
			found := false
			for _, t := range txts {
				found = found || strings.TrimSpace(t) == want
			}
			if !found {
				why := "no such record"
				if lerr != nil {
					why = lerr.Error()
				}
				return nil, problem(http.StatusConflict, "claim_not_verified", fmt.Sprintf("to claim %s, publish the TXT record %s with the value %q, then run this again (the lookup said: %s)", name, ClaimRecord(name), want, why))
			}
			return a.saveClaim(ctx, u.Name, name, "dns")
		})

	huma.Register(a.h, huma.Operation{OperationID: "claim-challenge", Method: http.MethodGet, Path: "/v1/claims/challenge", Security: bearer,
		Summary: "What to publish to claim a DNS name", Tags: []string{"routing"}},
		func(ctx context.Context, in *struct {
			Name string `query:"name" required:"true"`
		}) (*body[apitypes.ClaimChallenge], error) {
			name, err := names.Alias(in.Name, a.o.CloudDomain)
			if err != nil || strings.HasPrefix(name, "*") {
				return nil, invalid(fmt.Sprintf("%q: give a DNS name such as example.com", in.Name))
			}
			return &body[apitypes.ClaimChallenge]{Body: apitypes.ClaimChallenge{Name: name, Record: ClaimRecord(name), Value: "gantry-verify=" + ClaimToken(userOf(ctx).Name, name)}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-claims", Method: http.MethodGet, Path: "/v1/claims", Security: bearer,
		Summary: "Your claimed DNS names (all of them for an admin)", Tags: []string{"routing"}},
		func(ctx context.Context, in *struct{}) (*body[[]apitypes.ClaimView], error) {
			u := userOf(ctx)
			var claims []store.NameClaim
			if err := a.o.Store.View(func(tx *store.Tx) error {
				var err error
				claims, err = store.ListClaims(tx)
				return err
			}); err != nil {
				return nil, a.internal("listing claims", err)
			}
			out := []apitypes.ClaimView{}
			for _, c := range claims {
				if u.Admin || c.Owner == u.Name {
					out = append(out, apitypes.ClaimView(c))
				}
			}
			return &body[[]apitypes.ClaimView]{Body: out}, nil
		})

	type grantIn struct {
		Body apitypes.ClaimGrant
	}
	huma.Register(a.h, huma.Operation{OperationID: "grant-claim", Method: http.MethodPost, Path: "/v1/admin/claims", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Give a user a DNS name without a TXT record", Description: "Admins only. Replaces another user's claim of the same name.", Tags: []string{"admin"}},
		func(ctx context.Context, in *grantIn) (*body[apitypes.ClaimView], error) {
			if !userOf(ctx).Admin {
				return nil, problem(http.StatusForbidden, apitypes.CodeForbidden, "granting a DNS name needs an admin token")
			}
			name, err := names.Alias(in.Body.Name, a.o.CloudDomain)
			if err != nil || strings.HasPrefix(name, "*") {
				return nil, invalid(fmt.Sprintf("%q: give a DNS name such as example.com", in.Body.Name))
			}
			var target store.User
			if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.UserKey(in.Body.User), &target) }); err != nil {
				return nil, notFound("user_not_found", fmt.Sprintf("no user %q: see `gantry user list`", in.Body.User))
			}
			c := store.NameClaim{Name: name, Owner: target.Name, Method: "admin", Verified: time.Now().UTC()}
			if err := a.o.Store.Update(func(tx *store.Tx) error { return tx.Put(store.ClaimKey(name), &c) }); err != nil {
				return nil, a.internal("granting a claim", err)
			}
			a.log.Info("name granted", "name", name, "user", target.Name, "by", userOf(ctx).Name)
			return &body[apitypes.ClaimView]{Body: apitypes.ClaimView(c)}, nil
		})
}

func (a *API) saveClaim(ctx context.Context, user, name, method string) (*body[apitypes.ClaimView], error) {
	c := store.NameClaim{Name: name, Owner: user, Method: method, Verified: time.Now().UTC()}
	err := a.o.Store.Update(func(tx *store.Tx) error {
		why, err := claimConflict(tx, user, name)
		if err != nil {
			return err
		}
		if why != "" {
			return problem(http.StatusConflict, apitypes.CodeNameTaken, why)
		}
		return tx.Put(store.ClaimKey(name), &c)
	})
	if err != nil {
		return nil, asProblem(a, "saving a claim", err)
	}
	a.log.Info("name claimed", "name", name, "user", user, "method", method)
	return &body[apitypes.ClaimView]{Body: apitypes.ClaimView(c)}, nil
}
