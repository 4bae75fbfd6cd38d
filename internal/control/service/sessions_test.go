package service

import (
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Passwords: only your own (or an admin); sign-in gives a session token
// that expires and ends with sign-out; failures are limited per user and
// per address; API tokens made and revoked by their owner only.
func TestSessions(t *testing.T) {
	s := newService(t)
	admin, _, _ := s.CreateUser(nil, "admin", true)
	alice, _, _ := s.CreateUser(&admin, "alice", false)
	bob, _, _ := s.CreateUser(&admin, "bob", false)
	if err := s.SetPassword(&bob, "alice", "a long passphrase"); !IsKind(err, Forbidden) {
		t.Errorf("bob sets alice's password: %v", err)
	}
	if err := s.SetPassword(&alice, "alice", "short"); !IsKind(err, Invalid) {
		t.Errorf("a short password: %v", err)
	}
	if err := s.SetPassword(&alice, "alice", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(&admin, "bob", "bob's own passphrase"); err != nil {
		t.Fatal(err)
	}
	var p store.Password
	s.st.View(func(tx *store.Tx) error { return tx.Get(store.PasswordKey("alice"), &p) })
	if p.Hash == "" || p.Hash == "correct horse battery" || !checkPassword(p.Hash, "correct horse battery") {
		t.Errorf("stored hash %q", p.Hash)
	}

	tok, exp, err := s.SignIn("alice", "correct horse battery", "10.0.0.1")
	if err != nil || time.Until(exp) < SessionLife-time.Minute {
		t.Fatalf("sign-in: %v %v", err, exp)
	}
	if u, err := s.UserByToken(tok); err != nil || u.Name != "alice" {
		t.Fatalf("the session token: %v %v", u, err)
	}
	if _, _, err := s.SignIn("alice", "wrong", "10.0.0.1"); !IsKind(err, Forbidden) {
		t.Errorf("a wrong password: %v", err)
	}
	if _, _, err := s.SignIn("nobody", "correct horse battery", "10.0.0.9"); !IsKind(err, Forbidden) {
		t.Errorf("an unknown user: %v", err)
	}
	// Five failures for a user: the sixth attempt is refused, even with
	// the right password, from any address.
	for i := 0; i < 4; i++ {
		s.SignIn("alice", "guess", "10.0.0.2")
	}
	if _, _, err := s.SignIn("alice", "correct horse battery", "10.0.0.3"); !IsKind(err, Limited) {
		t.Errorf("after five failures: %v", err)
	}
	// bob, from an address that failed 5 times, is limited too.
	for i := 0; i < 5; i++ {
		s.SignIn("carol", "guess", "10.0.0.4")
	}
	if _, _, err := s.SignIn("bob", "bob's own passphrase", "10.0.0.4"); !IsKind(err, Limited) {
		t.Errorf("from a limited address: %v", err)
	}
	if _, _, err := s.SignIn("bob", "bob's own passphrase", "10.0.0.5"); err != nil {
		t.Errorf("bob from elsewhere: %v", err)
	}

	// An expired session is no token.
	s.st.Update(func(tx *store.Tx) error {
		var tk store.Token
		tx.Get(store.TokenKey(HashToken(tok)), &tk)
		tk.Expires = time.Now().Add(-time.Second)
		return tx.Put(store.TokenKey(HashToken(tok)), &tk)
	})
	if _, err := s.UserByToken(tok); err == nil {
		t.Error("an expired session still works")
	}
	s.signIns = signInLimit{}
	t1, _, _ := s.SignIn("alice", "correct horse battery", "10.0.0.1")
	t2, _, _ := s.SignIn("alice", "correct horse battery", "10.0.0.1")
	if err := s.SignOut(t1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByToken(t1); err == nil {
		t.Error("a signed-out session still works")
	}
	api, info, err := s.CreateToken(&alice, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.SignOutEverywhere(&alice); err != nil || n != 1 {
		t.Errorf("sign out everywhere: %d %v", n, err)
	}
	if _, err := s.UserByToken(t2); err == nil {
		t.Error("a session survived sign-out everywhere")
	}
	if _, err := s.UserByToken(api); err != nil {
		t.Error("sign-out everywhere revoked an API token")
	}
	if err := s.SignOut(api); err == nil {
		t.Error("an API token was ended as a session")
	}
	if err := s.RevokeToken(&bob, info.ID); !IsKind(err, NotFound) {
		t.Errorf("bob revokes alice's token: %v", err)
	}
	ts, _ := s.Tokens(&alice)
	if len(ts) != 2 { // the first one, and ci
		t.Errorf("alice's tokens: %+v", ts)
	}
	if err := s.RevokeToken(&alice, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByToken(api); err == nil {
		t.Error("a revoked token still works")
	}
}
