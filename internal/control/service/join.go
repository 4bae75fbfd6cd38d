package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// Cluster is what joins need of the store's etcd: its members.
type Cluster interface {
	// AddMember adds an etcd member at peerURL; it returns the
	// initial-cluster string the new member starts with and the members'
	// client URLs.
	AddMember(ctx context.Context, name, peerURL string) (initial string, endpoints []string, err error)
	MemberCount(ctx context.Context) (int, error)
	Endpoints(ctx context.Context) ([]string, error)
	// RemoveMember removes the etcd member of a machine, if it has one.
	RemoveMember(ctx context.Context, name string) error
}

// MaxMembers is how many machines run etcd members (the first three to
// form the cluster); later machines use them as clients.
const MaxMembers = 3

// DefaultTokenTTL is how long a join token lasts unless said.
const DefaultTokenTTL = time.Hour

// tokenPrefix starts every join token: gantry1.ID.SECRET.ROOTHASH.
const tokenPrefix = "gantry1."

// NewJoinToken makes a single-use join token (admins only). The token
// names the platform root's SHA-256, so the joiner trusts the server it
// joins through without any other set-up.
func (s *Service) NewJoinToken(caller *store.User, ttl time.Duration, rootSHA256 string) (string, time.Time, error) {
	if !caller.Admin {
		return "", time.Time{}, refuse(Forbidden, apitypes.CodeForbidden, "only an admin can make join tokens")
	}
	if s.o.Cluster == nil {
		return "", time.Time{}, refuse(Conflict, apitypes.CodeConflict, "this platform keeps its records in SQLite on one machine: start it with --cluster-init --advertise ADDRESS (its apps keep running) before other machines can join")
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > 7*24*time.Hour {
		return "", time.Time{}, refuse(Invalid, apitypes.CodeInvalid, "a join token lasts at most 168h")
	}
	id, secret := randHex(6), randHex(24)
	sum := sha256.Sum256([]byte(secret))
	tok := store.JoinToken{ID: id, SecretHash: hex.EncodeToString(sum[:]), Expires: time.Now().Add(ttl).UTC(), CreatedBy: caller.Name}
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Create(store.JoinTokenKey(id), &tok) }); err != nil {
		return "", time.Time{}, err
	}
	return tokenPrefix + id + "." + secret + "." + rootSHA256, tok.Expires, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ParseJoinToken splits a token into its id, secret and the SHA-256 of the
// platform root it is for.
func ParseJoinToken(tok string) (id, secret string, rootHash []byte, err error) {
	parts := strings.Split(strings.TrimPrefix(tok, tokenPrefix), ".")
	if !strings.HasPrefix(tok, tokenPrefix) || len(parts) != 3 {
		return "", "", nil, errors.New("not a join token: it looks like gantry1.ID.SECRET.HASH (gantry node token prints one)")
	}
	rootHash, err = hex.DecodeString(parts[2])
	if err != nil || len(rootHash) != sha256.Size {
		return "", "", nil, errors.New("the join token's root hash is damaged: copy the whole token again")
	}
	return parts[0], parts[1], rootHash, nil
}

// JoinRequest is what a machine asks to join with.
type JoinRequest = apitypes.JoinRequest

// JoinGrant is what a machine that joins receives.
type JoinGrant = apitypes.JoinGrant

// Join admits a machine: the token must exist, be unexpired and unused
// (it is used up now); the name and address must be free. The grant
// carries the CA's cluster files and the platform key (the machine must
// serve the same certificates and open the same sealed secrets), and how
// to reach etcd: as one of the first MaxMembers machines, with a member of
// its own.
func (s *Service) Join(ctx context.Context, req JoinRequest) (*JoinGrant, error) {
	if s.o.Cluster == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this platform is not a cluster (it keeps its records in SQLite): start it with --cluster-init")
	}
	id, secret, _, err := ParseJoinToken(req.Token)
	if err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	if err := names.Label("node", req.Name); err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error()+" (pass --node-name)")
	}
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("--advertise %q: not an IP address", req.Address))
	}
	live, err := s.st.Live()
	if err != nil {
		return nil, err
	}
	err = s.st.Update(func(tx *store.Tx) error {
		var tok store.JoinToken
		if err := tx.Get(store.JoinTokenKey(id), &tok); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return refuse(Forbidden, apitypes.CodeForbidden, "this join token is unknown or was used already: make a new one with `gantry node token`")
			}
			return err
		}
		sum := sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(tok.SecretHash)) != 1 {
			return refuse(Forbidden, apitypes.CodeForbidden, "this join token is unknown or was used already: make a new one with `gantry node token`")
		}
		if time.Now().After(tok.Expires) {
			tx.Delete(store.JoinTokenKey(id))
			return refuse(Forbidden, apitypes.CodeForbidden, fmt.Sprintf("this join token expired at %s: make a new one with `gantry node token`", tok.Expires.Format(time.RFC3339)))
		}
		nodes, err := store.ListNodes(tx)
		if err != nil {
			return err
		}
		if have := store.GearSubnet(tx); have != "" && req.GearSubnet != "" {
			if req.GearSubnet != have {
				return refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("this machine's gear subnet %s is not the cluster's (%s): start it with --gear-subnet %s", req.GearSubnet, have, have))
			}
			if p, err := netip.ParsePrefix(have); err == nil && p.Contains(addr) {
				return refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("this machine's address %s is inside the cluster's gear subnet %s: it could not be told from a gear", addr, have))
			}
		}
		for _, n := range nodes {
			if req.Isolation != "" && n.Isolation != "" && n.Isolation != req.Isolation {
				return refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("the cluster's machines run %s isolation (%s does): start this one with --isolation %s", n.Isolation, n.Name, n.Isolation))
			}
			if n.Name == req.Name {
				return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("a node named %s exists already: choose another --node-name (or `gantry node remove %s` if that machine is gone)", n.Name, n.Name))
			}
			if a, err := netip.ParseAddr(n.Address); err == nil && a == addr && live[n.Name] {
				return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("node %s is up at %s already: give this machine its own --advertise address", n.Name, n.Address))
			}
		}
		// Used up, whatever happens next.
		return tx.Delete(store.JoinTokenKey(id))
	})
	if err != nil {
		var tooLate *Error
		if errors.As(err, &tooLate) && strings.Contains(tooLate.Msg, "expired") {
			s.log.Warn("refused a join with an expired token", "node", req.Name, "address", req.Address)
		}
		return nil, err
	}
	s.log.Info("a machine joins", "node", req.Name, "address", req.Address)
	g := &JoinGrant{CloudDomain: s.o.CloudDomain, Files: map[string][]byte{}}
	for _, f := range s.o.JoinFiles {
		raw, err := os.ReadFile(filepath.Join(s.o.Layout.Root, f))
		if err != nil {
			return nil, fmt.Errorf("reading %s for the joining machine: %w", f, err)
		}
		g.Files[f] = raw
	}
	n, err := s.o.Cluster.MemberCount(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting the store's members: %w", err)
	}
	if n >= MaxMembers || req.PeerURL == "" {
		g.Endpoints, err = s.o.Cluster.Endpoints(ctx)
		return g, err
	}
	// A member: etcd refuses a member while the last one added has not
	// been connected for a few seconds; try for a while.
	deadline := time.Now().Add(45 * time.Second)
	for {
		g.InitialCluster, g.Endpoints, err = s.o.Cluster.AddMember(ctx, req.Name, req.PeerURL)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return nil, fmt.Errorf("adding the machine's etcd member: %w", err)
	}
	g.Member = true
	return g, nil
}
