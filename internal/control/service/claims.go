package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
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
func (s *Service) verificationRequired(tx *store.Tx, u *store.User) (bool, error) {
	if u.Admin {
		return false, nil
	}
	switch s.o.AliasVerification {
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

func (s *Service) lookupTXT(ctx context.Context, name string) ([]string, error) {
	r := net.DefaultResolver
	if s.o.DNSResolver != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, s.o.DNSResolver)
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return r.LookupTXT(ctx, name)
}

// claimName checks a name the caller wants to claim or ask about; what
// says what to give instead.
func (s *Service) claimName(text, what string) (string, error) {
	name, err := names.Alias(text, s.o.CloudDomain)
	if err != nil || strings.HasPrefix(name, "*") {
		return "", refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%q: %s", text, what))
	}
	return name, nil
}

// ClaimChallenge says what the caller publishes to claim name.
func (s *Service) ClaimChallenge(caller *store.User, text string) (apitypes.ClaimChallenge, error) {
	name, err := s.claimName(text, "give a DNS name such as example.com")
	if err != nil {
		return apitypes.ClaimChallenge{}, err
	}
	return apitypes.ClaimChallenge{Name: name, Record: ClaimRecord(name), Value: "gantry-verify=" + ClaimToken(caller.Name, name)}, nil
}

// Claim gives the caller name once its TXT record says so.
func (s *Service) Claim(ctx context.Context, caller *store.User, text string) (store.NameClaim, error) {
	name, err := s.claimName(text, "claim a DNS name such as example.com (no wildcard)")
	if err != nil {
		return store.NameClaim{}, err
	}
	want := "gantry-verify=" + ClaimToken(caller.Name, name)
	txts, lerr := s.lookupTXT(ctx, ClaimRecord(name))
	found := false
	for _, t := range txts {
		found = found || strings.TrimSpace(t) == want
	}
	if !found {
		why := "no such record"
		if lerr != nil {
			why = lerr.Error()
		}
		return store.NameClaim{}, refuse(Conflict, "claim_not_verified", fmt.Sprintf("to claim %s, publish the TXT record %s with the value %q, then run this again (the lookup said: %s)", name, ClaimRecord(name), want, why))
	}
	c := store.NameClaim{Name: name, Owner: caller.Name, Method: "dns", Verified: time.Now().UTC()}
	err = s.st.Update(func(tx *store.Tx) error {
		why, err := claimConflict(tx, caller.Name, name)
		if err != nil {
			return err
		}
		if why != "" {
			return refuse(Conflict, apitypes.CodeNameTaken, why)
		}
		return tx.Put(store.ClaimKey(name), &c)
	})
	if err != nil {
		return store.NameClaim{}, err
	}
	s.log.Info("name claimed", "name", name, "user", caller.Name, "method", "dns")
	return c, nil
}

// Claims lists the caller's claims (every claim for an admin).
func (s *Service) Claims(caller *store.User) ([]store.NameClaim, error) {
	var all []store.NameClaim
	if err := s.st.View(func(tx *store.Tx) error {
		var err error
		all, err = store.ListClaims(tx)
		return err
	}); err != nil {
		return nil, err
	}
	var out []store.NameClaim
	for _, c := range all {
		if caller.Admin || c.Owner == caller.Name {
			out = append(out, c)
		}
	}
	return out, nil
}

// GrantClaim gives user a name without a TXT record (admins only); it
// replaces another user's claim of the same name.
func (s *Service) GrantClaim(caller *store.User, user, text string) (store.NameClaim, error) {
	if !caller.Admin {
		return store.NameClaim{}, refuse(Forbidden, apitypes.CodeForbidden, "granting a DNS name needs an admin token")
	}
	name, err := s.claimName(text, "give a DNS name such as example.com")
	if err != nil {
		return store.NameClaim{}, err
	}
	var target store.User
	if err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.UserKey(user), &target) }); err != nil {
		return store.NameClaim{}, refuse(NotFound, "user_not_found", fmt.Sprintf("no user %q: see `gantry user list`", user))
	}
	c := store.NameClaim{Name: name, Owner: target.Name, Method: "admin", Verified: time.Now().UTC()}
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Put(store.ClaimKey(name), &c) }); err != nil {
		return store.NameClaim{}, err
	}
	s.log.Info("name granted", "name", name, "user", target.Name, "by", caller.Name)
	return c, nil
}
