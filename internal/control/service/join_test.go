package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

type fakeCluster struct{ members []string }

func (f *fakeCluster) AddMember(_ context.Context, name, peerURL string) (string, []string, error) {
	f.members = append(f.members, name+"="+peerURL)
	return strings.Join(f.members, ","), []string{"https://192.0.2.1:2379"}, nil
}
func (f *fakeCluster) MemberCount(context.Context) (int, error) { return len(f.members), nil }
func (f *fakeCluster) RemoveMember(_ context.Context, name string) error {
	for i, m := range f.members {
		if strings.HasPrefix(m, name+"=") {
			f.members = append(f.members[:i], f.members[i+1:]...)
			return nil
		}
	}
	return nil
}
func (f *fakeCluster) Endpoints(context.Context) ([]string, error) {
	return []string{"https://192.0.2.1:2379"}, nil
}

// Join tokens are single use (a refused join does not use one up), expire, need an admin and a cluster; a
// joiner cannot take a node's name; the first three machines get etcd
// members, later ones the members' endpoints; the grant carries the files.
func TestJoin(t *testing.T) {
	s := newService(t)
	admin, _, _ := s.CreateUser(nil, "admin", true)
	alice, _, _ := s.CreateUser(&admin, "alice", false)
	const root = "d732dfdc8b4a8808c3f05e0230d71790cab77ec60003d6703183171cb368067f"
	if _, _, err := s.NewJoinToken(&admin, 0, root); !IsKind(err, Conflict) || !strings.Contains(err.Error(), "--cluster-init") {
		t.Errorf("a token on SQLite: %v", err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pki"), 0o700)
	os.WriteFile(filepath.Join(dir, "pki", "root.crt"), []byte("ROOT"), 0o644)
	os.WriteFile(filepath.Join(dir, "secrets.key"), []byte("KEY"), 0o600)
	fc := &fakeCluster{members: []string{"m1=https://192.0.2.1:2380"}}
	s.o.Cluster, s.o.Layout, s.o.JoinFiles = fc, layout.Layout{Root: dir}, []string{"pki/root.crt", "secrets.key"}
	s.RegisterNode(store.Node{Name: "m1", Address: "192.0.2.1"})

	if _, _, err := s.NewJoinToken(&alice, 0, root); !IsKind(err, Forbidden) {
		t.Errorf("a token by a user: %v", err)
	}
	tok, exp, err := s.NewJoinToken(&admin, 0, root)
	if err != nil || time.Until(exp) < 59*time.Minute || !strings.HasSuffix(tok, "."+root) {
		t.Fatalf("token %q expires %v: %v", tok, exp, err)
	}
	ctx := context.Background()
	if _, err := s.Join(ctx, JoinRequest{Token: tok, Name: "m1", Address: "192.0.2.9"}); !IsKind(err, Conflict) {
		t.Errorf("a joiner named as a node: %v", err)
	}
	// (a refused join leaves the token for a corrected one)
	id, _, _, _ := ParseJoinToken(tok)
	forged := tok[:len(tokenPrefix)+len(id)+1] + strings.Repeat("0", 48) + "." + root
	if _, err := s.Join(ctx, JoinRequest{Token: forged, Name: "m2", Address: "192.0.2.2"}); !IsKind(err, Forbidden) {
		t.Errorf("a wrong secret: %v", err)
	}
	if _, err := s.Join(ctx, JoinRequest{Token: "nonsense", Name: "m2", Address: "192.0.2.2"}); !IsKind(err, Invalid) {
		t.Errorf("not a token: %v", err)
	}
	// The gear network and isolation must be the cluster's.
	s.RegisterNode(store.Node{Name: "m1", Address: "192.0.2.1", Isolation: "namespaces"})
	s.st.Update(func(tx *store.Tx) error { return store.SetGearSubnet(tx, "10.88.0.0/16") })
	for _, c := range []struct {
		req  JoinRequest
		want string
	}{
		{JoinRequest{Name: "m2", Address: "192.0.2.2", Isolation: "namespaces", GearSubnet: "10.88.0.0/17"}, "--gear-subnet 10.88.0.0/16"},
		{JoinRequest{Name: "m2", Address: "10.88.9.9", Isolation: "namespaces", GearSubnet: "10.88.0.0/16"}, "inside the cluster's gear subnet"},
		{JoinRequest{Name: "m2", Address: "192.0.2.2", Isolation: "process"}, "--isolation namespaces"},
	} {
		c.req.Token = tok
		if _, err := s.Join(ctx, c.req); !IsKind(err, Invalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("join %+v: %v; want a refusal saying %q", c.req, err, c.want)
		}
	}
	g, err := s.Join(ctx, JoinRequest{Token: tok, Name: "m2", Address: "192.0.2.2", PeerURL: "https://192.0.2.2:2380", Isolation: "namespaces", GearSubnet: "10.88.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Member || !strings.Contains(g.InitialCluster, "m2=https://192.0.2.2:2380") || string(g.Files["secrets.key"]) != "KEY" || string(g.Files["pki/root.crt"]) != "ROOT" {
		t.Errorf("grant %+v", g)
	}
	if _, err := s.Join(ctx, JoinRequest{Token: tok, Name: "m3", Address: "192.0.2.3"}); !IsKind(err, Forbidden) {
		t.Errorf("a token used twice: %v", err)
	}
	short, _, _ := s.NewJoinToken(&admin, time.Millisecond, root)
	time.Sleep(5 * time.Millisecond)
	if _, err := s.Join(ctx, JoinRequest{Token: short, Name: "m3", Address: "192.0.2.3"}); !IsKind(err, Forbidden) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token: %v", err)
	}
	fc.members = append(fc.members, "m3=x")
	tok, _, _ = s.NewJoinToken(&admin, 0, root)
	g, err = s.Join(ctx, JoinRequest{Token: tok, Name: "m4", Address: "192.0.2.4", PeerURL: "https://192.0.2.4:2380"})
	if err != nil || g.Member || len(g.Endpoints) != 1 {
		t.Errorf("the fourth machine: %+v %v; want a client of the members", g, err)
	}

	// m2 is gone for good: removing the node removes its etcd member, and
	// the next machine to join takes its place as a member.
	s.RegisterNode(store.Node{Name: "m2", Address: "192.0.2.2"}) // as the joiner did when it started
	if err := s.RemoveNode(&admin, "m2"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(fc.members, ","), "m2=") {
		t.Errorf("members after m2 was removed: %v", fc.members)
	}
	tok, _, _ = s.NewJoinToken(&admin, 0, root)
	if g, err := s.Join(ctx, JoinRequest{Token: tok, Name: "m5", Address: "192.0.2.5", PeerURL: "https://192.0.2.5:2380"}); err != nil || !g.Member {
		t.Errorf("the machine after a removal: %+v %v; want a member", g, err)
	}
}
