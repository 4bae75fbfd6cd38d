package service

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// NewToken returns a fresh API token secret.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "gnt_" + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is how tokens are stored: only their SHA-256.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// UserByToken is the user an API token belongs to (store.ErrNotFound if
// none).
func (s *Service) UserByToken(tok string) (*store.User, error) {
	var t store.Token
	var u store.User
	err := s.st.View(func(tx *store.Tx) error {
		if err := tx.Get(store.TokenKey(HashToken(tok)), &t); err != nil {
			return err
		}
		if !t.Expires.IsZero() && time.Now().After(t.Expires) {
			return store.ErrNotFound // a console session that ended
		}
		return tx.Get(store.UserKey(t.User), &u)
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// CreateUser creates a user and returns their first token; only an admin
// may (caller nil: the platform itself, at bootstrap).
func (s *Service) CreateUser(caller *store.User, name string, admin bool) (store.User, string, error) {
	if caller != nil && !caller.Admin {
		return store.User{}, "", refuse(Forbidden, apitypes.CodeForbidden, "only an admin can create users")
	}
	if err := names.Label("user", name); err != nil {
		return store.User{}, "", refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	tok := NewToken()
	u := store.User{Name: name, Admin: admin, Created: time.Now().UTC()}
	err := s.st.Update(func(tx *store.Tx) error {
		if err := tx.Create(store.UserKey(name), &u); err != nil {
			return err
		}
		return tx.Create(store.TokenKey(HashToken(tok)), &store.Token{User: name, Created: u.Created})
	})
	if errors.Is(err, store.ErrExists) {
		return store.User{}, "", refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("user %q already exists", name))
	}
	if err != nil {
		return store.User{}, "", err
	}
	by := "bootstrap"
	if caller != nil {
		by = caller.Name
	}
	s.log.Info("user created", "user", name, "by", by)
	return u, tok, nil
}

// Users lists every user (admins only).
func (s *Service) Users(caller *store.User) ([]store.User, error) {
	if !caller.Admin {
		return nil, refuse(Forbidden, apitypes.CodeForbidden, "only an admin can list users")
	}
	var us []store.User
	err := s.st.View(func(tx *store.Tx) error {
		var err error
		us, err = store.ListUsers(tx)
		return err
	})
	return us, err
}

// SSHKeys lists the caller's SSH keys by name.
func (s *Service) SSHKeys(caller *store.User) ([]store.SSHKey, error) {
	var out []store.SSHKey
	err := s.st.View(func(tx *store.Tx) error {
		all, err := store.ListSSHKeys(tx)
		for _, k := range all {
			if k.User == caller.Name {
				out = append(out, k)
			}
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// AddSSHKey adds one authorized_keys line to the caller's keys; a key
// belongs to one user only.
func (s *Service) AddSSHKey(caller *store.User, text, name string) (*store.SSHKey, error) {
	k, err := ParseKey(text, name)
	if err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	k.User = caller.Name
	err = s.st.Update(func(tx *store.Tx) error {
		var other store.SSHKey
		if tx.Get(store.SSHKeyKey(k.Fingerprint), &other) == nil {
			if other.User == caller.Name {
				return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("you already added this key as %q", other.Name))
			}
			return refuse(Conflict, apitypes.CodeConflict, "this key belongs to another user: generate your own with `ssh-keygen -t ed25519`")
		}
		mine, err := store.ListSSHKeys(tx)
		if err != nil {
			return err
		}
		for _, m := range mine {
			if m.User == caller.Name && m.Name == k.Name {
				return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("you already have a key named %q: choose another name with --name", k.Name))
			}
		}
		return tx.Create(store.SSHKeyKey(k.Fingerprint), k)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("ssh key added", "user", caller.Name, "fingerprint", k.Fingerprint)
	return k, nil
}

// RemoveSSHKey removes one of the caller's keys, by name or fingerprint.
func (s *Service) RemoveSSHKey(caller *store.User, nameOrFingerprint string) error {
	keys, err := s.SSHKeys(caller)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Name == nameOrFingerprint || k.Fingerprint == nameOrFingerprint {
			return s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.SSHKeyKey(k.Fingerprint)) })
		}
	}
	return refuse(NotFound, apitypes.CodeNotFound, fmt.Sprintf("you have no SSH key named %q: see `gantry sshkey list`", nameOrFingerprint))
}

// ParseKey validates one authorized_keys line.
func ParseKey(text, name string) (*store.SSHKey, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errors.New("the key is empty: pass the contents of your public key file, e.g. ~/.ssh/id_ed25519.pub")
	}
	if strings.Contains(text, "PRIVATE KEY") {
		return nil, errors.New("this is a private key: never share it; pass the .pub file instead")
	}
	pk, comment, _, rest, err := gossh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("not an SSH public key (%v): pass a line like \"ssh-ed25519 AAAA... you@host\"", err)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("pass one key at a time")
	}
	switch pk.Type() {
	case gossh.KeyAlgoRSA:
		if ck, ok := pk.(gossh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(interface{ Size() int }); ok && rk.Size()*8 < 2048 {
				return nil, fmt.Errorf("this RSA key has %d bits: use at least 2048, or better an ed25519 key (`ssh-keygen -t ed25519`)", rk.Size()*8)
			}
		}
	case gossh.KeyAlgoDSA:
		return nil, errors.New("DSA keys are insecure and not accepted: generate an ed25519 key with `ssh-keygen -t ed25519`")
	}
	if name == "" {
		name = comment
	}
	if name == "" {
		name = "default"
	}
	name = strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r < 32 {
			return '-'
		}
		return r
	}, name)
	if len(name) > 64 {
		name = name[:64]
	}
	return &store.SSHKey{Name: name, Fingerprint: gossh.FingerprintSHA256(pk), Type: pk.Type(),
		Authorized: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(pk))), Created: time.Now().UTC()}, nil
}
