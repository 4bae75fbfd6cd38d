package service

import (
	"errors"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Bootstrap makes sure the platform has an admin that the machine's own
// CLI can act as. haveConfig says the local CLI has a config, holding the
// token known. It returns a token to write to that config ("" when the
// config is good as it is); foreign says the config holds a token of
// another server (leave it alone).
func (s *Service) Bootstrap(haveConfig bool, known string) (token string, foreign bool, err error) {
	var users []store.User
	if err := s.st.View(func(tx *store.Tx) error {
		var err error
		users, err = store.ListUsers(tx)
		return err
	}); err != nil {
		return "", false, err
	}
	if len(users) == 0 {
		_, tok, err := s.CreateUser(nil, "admin", true)
		return tok, false, err
	}
	if haveConfig {
		var t store.Token
		err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.TokenKey(HashToken(known)), &t) })
		if errors.Is(err, store.ErrNotFound) {
			return "", true, nil
		}
		return "", false, err
	}
	// The local configuration went missing: give the admin a new token.
	tok := NewToken()
	err = s.st.Update(func(tx *store.Tx) error {
		return tx.Create(store.TokenKey(HashToken(tok)), &store.Token{User: "admin"})
	})
	if err != nil {
		return "", false, err
	}
	return tok, false, nil
}
