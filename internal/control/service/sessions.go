package service

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// Console sign-in: a password per user (argon2id), a session token that
// expires, failed attempts limited per user and per address.

// SessionLife is how long a console sign-in lasts.
const SessionLife = 12 * time.Hour

// Password limits.
const (
	MinPassword = 10
	MaxPassword = 256
)

// argon2id parameters (OWASP's: 19 MiB, 2 passes, 1 lane).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
)

func hashPassword(pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, 32)
	b64 := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64(salt), b64(key))
}

func checkPassword(hash, pw string) bool {
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(f[4])
	want, err2 := base64.RawStdEncoding.DecodeString(f[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// SetPassword sets a user's console password: their own, or anyone's for
// an admin.
func (s *Service) SetPassword(caller *store.User, name, pw string) error {
	if caller.Name != name && !caller.Admin {
		return refuse(Forbidden, apitypes.CodeForbidden, "you may set your own password only")
	}
	if n := len([]rune(pw)); n < MinPassword || len(pw) > MaxPassword {
		return refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("a password has %d to %d characters: a passphrase of a few words is easy to remember", MinPassword, MaxPassword))
	}
	err := s.st.Update(func(tx *store.Tx) error {
		if ok, _ := tx.Has(store.UserKey(name)); !ok {
			return refuse(NotFound, "user_not_found", fmt.Sprintf("no user %q", name))
		}
		return tx.Put(store.PasswordKey(name), &store.Password{User: name, Hash: hashPassword(pw), Set: time.Now().UTC()})
	})
	if err == nil {
		s.log.Info("password set", "user", name, "by", caller.Name)
	}
	return err
}

// signInLimit counts failed sign-ins per user and per address: more than
// limit within window are refused until the window has passed.
type signInLimit struct {
	mu     sync.Mutex
	failed map[string][]time.Time
}

const (
	signInWindow = 5 * time.Minute
	signInMax    = 5
)

// wait says how long key must wait before it may try again (0: now).
func (l *signInLimit) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	recent := l.failed[key][:0]
	for _, t := range l.failed[key] {
		if now.Sub(t) < signInWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) == 0 {
		delete(l.failed, key)
		return 0
	}
	l.failed[key] = recent
	if len(recent) < signInMax {
		return 0
	}
	return signInWindow - now.Sub(recent[0])
}

func (l *signInLimit) fail(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = map[string][]time.Time{}
	}
	for _, k := range keys {
		l.failed[k] = append(l.failed[k], now)
	}
}

// SignIn checks a user's password and returns a new session token (it
// expires after SessionLife). Failures are logged and limited: after 5
// within 5 minutes for a user or an address, it is refused until then.
func (s *Service) SignIn(name, pw, addr string) (string, time.Time, error) {
	now := time.Now()
	for _, key := range []string{"user:" + name, "addr:" + addr} {
		if d := s.signIns.wait(key, now); d > 0 {
			s.log.Warn("sign-in refused: too many failures", "user", name, "addr", addr)
			return "", time.Time{}, refuse(Limited, "too_many_sign_ins", fmt.Sprintf("too many failed sign-ins: try again in %s", d.Round(time.Second)))
		}
	}
	var p store.Password
	err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.PasswordKey(name), &p) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", time.Time{}, err
	}
	// The hash is computed even for an unknown user: no timing tells
	// which names exist.
	hash := p.Hash
	if hash == "" {
		hash = dummyHash()
	}
	if !checkPassword(hash, pw) || p.Hash == "" {
		s.signIns.fail(now, "user:"+name, "addr:"+addr)
		s.log.Warn("failed sign-in", "user", name, "addr", addr)
		return "", time.Time{}, refuse(Forbidden, "sign_in_failed", "wrong user name or password (a user without a password sets one with `gantry user password`)")
	}
	tok := NewToken()
	exp := now.Add(SessionLife).UTC()
	err = s.st.Update(func(tx *store.Tx) error {
		all, err := store.ListTokens(tx)
		if err != nil {
			return err
		}
		for h, t := range all { // the user's ended sessions go
			if t.User == name && t.Session && now.After(t.Expires) {
				tx.Delete(store.TokenKey(h))
			}
		}
		return tx.Create(store.TokenKey(HashToken(tok)), &store.Token{User: name, Created: now.UTC(), Session: true, Name: "console sign-in from " + addr, Expires: exp})
	})
	if err != nil {
		return "", time.Time{}, err
	}
	s.log.Info("signed in", "user", name, "addr", addr)
	return tok, exp, nil
}

// dummyHash is checked against for a user without a password, so that
// the answer takes as long as for one with. Made on first use: at package
// init it cost every gantry process (shims, gear-init, the CLI) 37 ms
// and 19 MiB.
var dummyHash = sync.OnceValue(func() string { return hashPassword("not a password of anyone's") })

// SignOut ends one session (the token it was made with).
func (s *Service) SignOut(tok string) error {
	return s.st.Update(func(tx *store.Tx) error {
		var t store.Token
		if err := tx.Get(store.TokenKey(HashToken(tok)), &t); err != nil || !t.Session {
			return refuse(Invalid, apitypes.CodeInvalid, "this token is not a console session")
		}
		return tx.Delete(store.TokenKey(HashToken(tok)))
	})
}

// SignOutEverywhere ends every console session of the caller.
func (s *Service) SignOutEverywhere(caller *store.User) (int, error) {
	n := 0
	err := s.st.Update(func(tx *store.Tx) error {
		n = 0
		all, err := store.ListTokens(tx)
		if err != nil {
			return err
		}
		for h, t := range all {
			if t.User == caller.Name && t.Session {
				n++
				if err := tx.Delete(store.TokenKey(h)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		s.log.Info("signed out everywhere", "user", caller.Name, "sessions", n)
	}
	return n, err
}

// TokenInfo is an API token as its owner sees it (never its secret).
type TokenInfo struct {
	ID      string // the first 12 hex digits of its hash
	Name    string
	Session bool
	Created time.Time
	Expires time.Time
}

// Tokens lists the caller's API tokens and sessions, newest first.
func (s *Service) Tokens(caller *store.User) ([]TokenInfo, error) {
	var out []TokenInfo
	err := s.st.View(func(tx *store.Tx) error {
		all, err := store.ListTokens(tx)
		for h, t := range all {
			if t.User == caller.Name && (t.Expires.IsZero() || time.Now().Before(t.Expires)) {
				out = append(out, TokenInfo{ID: h[:12], Name: t.Name, Session: t.Session, Created: t.Created, Expires: t.Expires})
			}
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// CreateToken makes an API token for the caller (shown once).
func (s *Service) CreateToken(caller *store.User, name string) (string, TokenInfo, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", TokenInfo{}, refuse(Invalid, apitypes.CodeInvalid, "name the token (what it is for, e.g. ci), in at most 100 characters")
	}
	tok := NewToken()
	t := store.Token{User: caller.Name, Name: name, Created: time.Now().UTC()}
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Create(store.TokenKey(HashToken(tok)), &t) }); err != nil {
		return "", TokenInfo{}, err
	}
	s.log.Info("API token created", "user", caller.Name, "name", name)
	return tok, TokenInfo{ID: HashToken(tok)[:12], Name: name, Created: t.Created}, nil
}

// RevokeToken removes one of the caller's tokens (or sessions) by ID.
func (s *Service) RevokeToken(caller *store.User, id string) error {
	if len(id) < 8 {
		return refuse(Invalid, apitypes.CodeInvalid, "give the token's ID as `gantry token list` shows it")
	}
	return s.st.Update(func(tx *store.Tx) error {
		all, err := store.ListTokens(tx)
		if err != nil {
			return err
		}
		for h, t := range all {
			if strings.HasPrefix(h, id) && t.User == caller.Name {
				s.log.Info("API token revoked", "user", caller.Name, "name", t.Name)
				return tx.Delete(store.TokenKey(h))
			}
		}
		return refuse(NotFound, "token_not_found", fmt.Sprintf("you have no token %s", id))
	})
}
