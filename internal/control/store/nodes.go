package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// Node is a machine of the platform. Key: nodes/NAME. The record is what
// the machine said of itself when it started and what operators set
// (cordon); whether it is up now is its presence (Live), never this record.
type Node struct {
	Name    string `json:"name"`
	Address string `json:"address"` // where the other machines reach it
	// Peer is its cluster port (HOST:PORT, mutual TLS), where the other
	// machines' agents reach its agent; "" on one machine.
	Peer    string   `json:"peer,omitempty"`
	Roles   []string `json:"roles"` // control, node, edge
	Version string   `json:"version"`
	// MemoryTotal is the memory gears may use on it, in bytes.
	MemoryTotal int64  `json:"memory_total"`
	Isolation   string `json:"isolation"`
	// Overlay is how its gears reach other machines' gears: "none" (one
	// machine), "vxlan" or "wireguard".
	Overlay string `json:"overlay,omitempty"`
	// GearBlock is its block of the gear subnet (namespaced gears in a
	// cluster): its gears' addresses.
	GearBlock string `json:"gear_block,omitempty"`
	// OverlayKey is its WireGuard public key (a WireGuard overlay).
	OverlayKey string `json:"overlay_key,omitempty"`
	// Cordoned nodes get no new gears.
	Cordoned bool `json:"cordoned,omitempty"`
	// DownSince is when the scheduler's leader saw it go down (zero: up).
	DownSince time.Time `json:"down_since,omitempty"`
	Joined    time.Time `json:"joined"`
	Started   time.Time `json:"started"`
}

// Node roles.
const (
	RoleControl = "control"
	RoleNode    = "node"
	RoleEdge    = "edge"
)

// HasRole reports whether the node plays role.
func (n *Node) HasRole(role string) bool {
	for _, r := range n.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// NodeKey is the store key of a node.
func NodeKey(name string) string { return "nodes/" + name }

// ListNodes lists every node, up or not.
func ListNodes(tx *Tx) ([]Node, error) { return List[Node](tx, "nodes/") }

// Presence: a running machine keeps its name alive in the store; when it
// stops renewing (it died, or lost the store), the name vanishes after
// the time to live, whoever looks. On etcd the name is a key under a lease
// (etcd expires it, with no clock of ours involved); on one machine
// (SQLite, memory) presence is this process's own memory, since no other
// machine can look.

// presencer is a backend that keeps presence itself (etcd).
type presencer interface {
	keepAlive(ctx context.Context, name string, ttl time.Duration, lost func(error)) error
	live() (map[string]bool, error)
}

// localPresence is presence within one process.
type localPresence struct {
	mu      sync.Mutex
	until   map[string]time.Time
	reports map[string][]byte
}

// KeepAlive announces name as up until ctx ends (or the store can no
// longer be reached for longer than ttl). It returns once the name is
// announced; lost, if set, is called each time the announcement lapses.
func (s *Store) KeepAlive(ctx context.Context, name string, ttl time.Duration, lost func(error)) error {
	if lost == nil {
		lost = func(error) {}
	}
	if p, ok := s.b.(presencer); ok {
		return p.keepAlive(ctx, name, ttl, lost)
	}
	s.local.mu.Lock()
	if s.local.until == nil {
		s.local.until = map[string]time.Time{}
	}
	s.local.until[name] = time.Time{} // until ctx ends
	s.local.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.local.mu.Lock()
		delete(s.local.until, name)
		s.local.mu.Unlock()
	}()
	return nil
}

// Live returns the names that are up now.
func (s *Store) Live() (map[string]bool, error) {
	if p, ok := s.b.(presencer); ok {
		return p.live()
	}
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	out := map[string]bool{}
	for n := range s.local.until {
		out[n] = true
	}
	return out, nil
}

// ErrNotLeader is returned by work given to Lead after leadership lapsed.
var ErrNotLeader = errors.New("no longer the leader")

// leader is a backend that elects (etcd).
type leader interface {
	lead(ctx context.Context, role, id string, ttl time.Duration, act func(ctx context.Context)) error
}

// Lead runs act while this process is the one leader of role among every
// process sharing the store, as many times as it wins (it waits while
// another leads). The context act gets ends as soon as leadership is lost
// (a partitioned leader stops acting once its lease has lapsed, before
// another can be elected). On one machine (SQLite, memory) the process
// always leads. Lead returns when ctx ends.
func (s *Store) Lead(ctx context.Context, role, id string, ttl time.Duration, act func(ctx context.Context)) error {
	if l, ok := s.b.(leader); ok {
		return l.lead(ctx, role, id, ttl, act)
	}
	act(ctx)
	return nil
}

// Leader returns who leads role now ("" when no one does).
func (s *Store) Leader(role string) (string, error) {
	if l, ok := s.b.(interface {
		leaderOf(role string) (string, error)
	}); ok {
		return l.leaderOf(role)
	}
	return "", nil
}

// trimPrefix drops a prefix from every key of m.
func trimPrefix(keys []string, prefix string) map[string]bool {
	out := map[string]bool{}
	for _, k := range keys {
		out[strings.TrimPrefix(k, prefix)] = true
	}
	return out
}

// JoinToken lets one machine join the cluster once before it expires.
// Key: jointokens/ID. Only the SHA-256 of its secret is kept.
type JoinToken struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Expires    time.Time `json:"expires"`
	CreatedBy  string    `json:"created_by"`
}

// JoinTokenKey is the store key of a join token.
func JoinTokenKey(id string) string { return "jointokens/" + id }

// ListJoinTokens lists the join tokens not used yet.
func ListJoinTokens(tx *Tx) ([]JoinToken, error) { return List[JoinToken](tx, "jointokens/") }

// locker is a backend with locks shared by every process (etcd).
type locker interface {
	lock(ctx context.Context, name string) (unlock func(), err error)
}

// Lock takes a lock named name that every process sharing the store
// respects (on etcd; on one machine there is no other process and Lock
// returns at once). It waits until the lock is free or ctx ends.
func (s *Store) Lock(ctx context.Context, name string) (unlock func(), err error) {
	if l, ok := s.b.(locker); ok {
		return l.lock(ctx, name)
	}
	return func() {}, nil
}

// Reports: what each machine says of itself every few seconds (its
// routers' live connections per app), beside the records: a report is no
// change of the records and wakes no watcher. On one machine they are
// this process's memory.

type reporter interface {
	report(name string, raw []byte) error
	reports() (map[string][]byte, error)
}

// Report replaces this machine's report.
func (s *Store) Report(name string, raw []byte) error {
	if r, ok := s.b.(reporter); ok {
		return r.report(name, raw)
	}
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	if s.local.reports == nil {
		s.local.reports = map[string][]byte{}
	}
	s.local.reports[name] = append([]byte(nil), raw...)
	return nil
}

// Reports returns every machine's last report, by name (a machine that is
// down may have left one: check Live).
func (s *Store) Reports() (map[string][]byte, error) {
	if r, ok := s.b.(reporter); ok {
		return r.reports()
	}
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range s.local.reports {
		out[k] = v
	}
	return out, nil
}
