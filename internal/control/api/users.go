package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

type body[T any] struct{ Body T }

func userView(u *store.User) apitypes.UserView {
	return apitypes.UserView{Name: u.Name, Admin: u.Admin, Created: u.Created}
}

// NewToken returns a fresh API token secret.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "gnt_" + base64.RawURLEncoding.EncodeToString(b)
}

// CreateUser creates a user and returns their first token. Bootstrap uses
// it for the admin.
func CreateUser(st *store.Store, name string, admin bool) (string, error) {
	if err := names.Label("user", name); err != nil {
		return "", err
	}
	tok := NewToken()
	now := time.Now().UTC()
	err := st.Update(func(tx *store.Tx) error {
		if err := tx.Create(store.UserKey(name), &store.User{Name: name, Admin: admin, Created: now}); err != nil {
			return err
		}
		return tx.Create(store.TokenKey(HashToken(tok)), &store.Token{User: name, Created: now})
	})
	if err != nil {
		return "", err
	}
	return tok, nil
}

func (a *API) registerUsers() {
	huma.Register(a.h, huma.Operation{OperationID: "health", Method: http.MethodGet, Path: "/healthz",
		Summary: "Health check", Description: "Answers 200 when the server is up. Needs no token.", Tags: []string{"platform"}},
		func(ctx context.Context, _ *struct{}) (*body[map[string]string], error) {
			return &body[map[string]string]{Body: map[string]string{"status": "ok"}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "info", Method: http.MethodGet, Path: "/v1/info", Security: bearer,
		Summary: "Platform and caller", Description: "The platform's version, cloud domain and SSH host keys, and who the token belongs to.", Tags: []string{"platform"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.InfoView], error) {
			return &body[apitypes.InfoView]{Body: apitypes.InfoView{Version: a.o.Version, CloudDomain: a.o.CloudDomain,
				User: userView(userOf(ctx)), SSHHostKeys: a.o.SSHHostKeys}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-users", Method: http.MethodGet, Path: "/v1/users", Security: bearer,
		Summary: "List users (admin)", Tags: []string{"users"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.UserView], error) {
			if !userOf(ctx).Admin {
				return nil, problem(http.StatusForbidden, apitypes.CodeForbidden, "only an admin can list users")
			}
			var out []apitypes.UserView
			err := a.o.Store.View(func(tx *store.Tx) error {
				us, err := store.ListUsers(tx)
				for i := range us {
					out = append(out, userView(&us[i]))
				}
				return err
			})
			if err != nil {
				return nil, a.internal("listing users", err)
			}
			return &body[[]apitypes.UserView]{Body: nonNil(out)}, nil
		})

	type createUser struct {
		Body apitypes.CreateUserRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "create-user", Method: http.MethodPost, Path: "/v1/users", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Create a user (admin)", Description: "Returns the new user's API token, once.", Tags: []string{"users"}},
		func(ctx context.Context, in *createUser) (*body[apitypes.NewUserView], error) {
			if !userOf(ctx).Admin {
				return nil, problem(http.StatusForbidden, apitypes.CodeForbidden, "only an admin can create users")
			}
			tok, err := CreateUser(a.o.Store, in.Body.Name, in.Body.Admin)
			if errors.Is(err, store.ErrExists) {
				return nil, problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("user %q already exists", in.Body.Name))
			}
			if err != nil {
				return nil, invalid(err.Error())
			}
			a.log.Info("user created", "user", in.Body.Name, "by", userOf(ctx).Name)
			return &body[apitypes.NewUserView]{Body: apitypes.NewUserView{UserView: apitypes.UserView{Name: in.Body.Name, Admin: in.Body.Admin, Created: time.Now().UTC()}, Token: tok}}, nil
		})

	huma.Register(a.h, huma.Operation{OperationID: "list-sshkeys", Method: http.MethodGet, Path: "/v1/sshkeys", Security: bearer,
		Summary: "List your SSH keys", Tags: []string{"sshkeys"}},
		func(ctx context.Context, _ *struct{}) (*body[[]apitypes.SSHKeyView], error) {
			keys, err := a.userKeys(userOf(ctx).Name)
			if err != nil {
				return nil, a.internal("listing keys", err)
			}
			out := []apitypes.SSHKeyView{}
			for _, k := range keys {
				out = append(out, apitypes.SSHKeyView{Name: k.Name, Fingerprint: k.Fingerprint, Type: k.Type, Created: k.Created})
			}
			return &body[[]apitypes.SSHKeyView]{Body: out}, nil
		})

	type addKey struct {
		Body apitypes.AddSSHKeyRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "add-sshkey", Method: http.MethodPost, Path: "/v1/sshkeys", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Add an SSH key", Tags: []string{"sshkeys"}},
		func(ctx context.Context, in *addKey) (*body[apitypes.SSHKeyView], error) {
			u := userOf(ctx)
			k, err := parseKey(in.Body.Key, in.Body.Name)
			if err != nil {
				return nil, invalid(err.Error())
			}
			k.User = u.Name
			err = a.o.Store.Update(func(tx *store.Tx) error {
				var other store.SSHKey
				if tx.Get(store.SSHKeyKey(k.Fingerprint), &other) == nil {
					if other.User == u.Name {
						return problem(http.StatusConflict, apitypes.CodeConflict, fmt.Sprintf("you already added this key as %q", other.Name))
					}
					return problem(http.StatusConflict, apitypes.CodeConflict, "this key belongs to another user: generate your own with `ssh-keygen -t ed25519`")
				}
				mine, err := store.ListSSHKeys(tx)
				if err != nil {
					return err
				}
				for _, m := range mine {
					if m.User == u.Name && m.Name == k.Name {
						return problem(http.StatusConflict, apitypes.CodeNameTaken, fmt.Sprintf("you already have a key named %q: choose another name with --name", k.Name))
					}
				}
				return tx.Create(store.SSHKeyKey(k.Fingerprint), k)
			})
			var p *apitypes.Problem
			if errors.As(err, &p) {
				return nil, p
			}
			if err != nil {
				return nil, a.internal("adding key", err)
			}
			a.log.Info("ssh key added", "user", u.Name, "fingerprint", k.Fingerprint)
			return &body[apitypes.SSHKeyView]{Body: apitypes.SSHKeyView{Name: k.Name, Fingerprint: k.Fingerprint, Type: k.Type, Created: k.Created}}, nil
		})

	type keyRef struct {
		Name string `path:"name" doc:"Key name or fingerprint"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "remove-sshkey", Method: http.MethodDelete, Path: "/v1/sshkeys/{name}", Security: bearer,
		DefaultStatus: http.StatusNoContent, Summary: "Remove an SSH key", Tags: []string{"sshkeys"}},
		func(ctx context.Context, in *keyRef) (*struct{}, error) {
			u := userOf(ctx)
			keys, err := a.userKeys(u.Name)
			if err != nil {
				return nil, a.internal("listing keys", err)
			}
			for _, k := range keys {
				if k.Name == in.Name || k.Fingerprint == in.Name {
					if err := a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.SSHKeyKey(k.Fingerprint)) }); err != nil {
						return nil, a.internal("removing key", err)
					}
					return nil, nil
				}
			}
			return nil, notFound(apitypes.CodeNotFound, fmt.Sprintf("you have no SSH key named %q: see `gantry sshkey list`", in.Name))
		})
}

func (a *API) userKeys(user string) ([]store.SSHKey, error) {
	var out []store.SSHKey
	err := a.o.Store.View(func(tx *store.Tx) error {
		all, err := store.ListSSHKeys(tx)
		for _, k := range all {
			if k.User == user {
				out = append(out, k)
			}
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// parseKey validates one authorized_keys line.
func parseKey(text, name string) (*store.SSHKey, error) {
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

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
