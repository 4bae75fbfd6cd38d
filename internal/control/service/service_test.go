package service

import (
	"path/filepath"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func newService(t *testing.T) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Options{Store: st})
}

const edKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"

// Who may do what with users, keys and domains, and the refusals' kinds.
func TestAccountsAndDomains(t *testing.T) {
	s := newService(t)
	admin, tok, err := s.CreateUser(nil, "admin", true)
	if err != nil || tok == "" {
		t.Fatal(err)
	}
	if u, err := s.UserByToken(tok); err != nil || u.Name != "admin" {
		t.Fatalf("UserByToken: %v %v", u, err)
	}
	alice, _, err := s.CreateUser(&admin, "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		kind Kind
	}{
		{"user by a non-admin", secondOf3(s.CreateUser(&alice, "bob", false)), Forbidden},
		{"a taken user name", secondOf3(s.CreateUser(&admin, "alice", false)), Conflict},
		{"a bad user name", secondOf3(s.CreateUser(&admin, "Alice!", false)), Invalid},
		{"users listed by a non-admin", second(s.Users(&alice)), Forbidden},
		{"a private key", second(s.AddSSHKey(&alice, "-----BEGIN OPENSSH PRIVATE KEY-----", "")), Invalid},
	} {
		if !IsKind(tc.err, tc.kind) {
			t.Errorf("%s: %v; want kind %d", tc.name, tc.err, tc.kind)
		}
	}
	if _, err := s.AddSSHKey(&alice, edKey, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddSSHKey(&admin, edKey, ""); !IsKind(err, Conflict) {
		t.Errorf("another user's key: %v", err)
	}
	keys, _ := s.SSHKeys(&alice)
	if len(keys) != 1 || keys[0].Name != "alice@laptop" {
		t.Errorf("keys: %+v", keys)
	}
	if err := s.RemoveSSHKey(&alice, "alice@laptop"); err != nil {
		t.Error(err)
	}
	if err := s.RemoveSSHKey(&alice, "alice@laptop"); !IsKind(err, NotFound) {
		t.Errorf("removing it twice: %v", err)
	}
	if _, err := s.CreateDomain(&alice, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDomain(&admin, "acme"); !IsKind(err, Conflict) {
		t.Errorf("a taken domain: %v", err)
	}
	if err := s.DeleteDomain(&admin, "acme"); !IsKind(err, NotFound) {
		t.Errorf("deleting another user's domain: %v", err)
	}
	if ds, _ := s.Domains(&alice); len(ds) != 1 || ds[0].Name != "acme" {
		t.Errorf("alice's domains: %+v", ds)
	}
}

func second[T any](_ T, err error) error            { return err }
func secondOf3[A, B any](_ A, _ B, err error) error { return err }

// Bootstrap creates the admin once, keeps a good config, leaves another
// server's config alone and replaces a lost one.
func TestBootstrap(t *testing.T) {
	s := newService(t)
	tok, foreign, err := s.Bootstrap(false, "")
	if err != nil || tok == "" || foreign {
		t.Fatalf("first start: %q %v %v", tok, foreign, err)
	}
	if again, foreign, err := s.Bootstrap(true, tok); again != "" || foreign || err != nil {
		t.Errorf("with a good config: %q %v %v", again, foreign, err)
	}
	if again, foreign, err := s.Bootstrap(true, "gnt_other"); again != "" || !foreign || err != nil {
		t.Errorf("with another server's config: %q %v %v", again, foreign, err)
	}
	fresh, _, err := s.Bootstrap(false, "")
	if err != nil || fresh == "" || fresh == tok {
		t.Fatalf("config lost: %q %v", fresh, err)
	}
	if u, err := s.UserByToken(fresh); err != nil || u.Name != "admin" {
		t.Errorf("the new token: %v %v", u, err)
	}
}
