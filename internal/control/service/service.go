// Package service holds the platform's domain operations, apart from any
// protocol: users and their tokens and SSH keys, domains, the first admin.
// The API maps HTTP onto it and bootstrap calls it; it reads and writes the
// store and decides who may do what. Its errors carry a Kind (what went
// wrong, for the API's status) and a stable Code and a message that says
// what to do.
//
// Apps, aliases, certificates, egress, scaling and cartridges are still
// decided in control/api's handlers; they move here next (ARCHITECTURE.md).
package service

import (
	"errors"
	"log/slog"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Kind is the class of a refusal.
type Kind int

const (
	Invalid   Kind = iota + 1 // the request is wrong
	NotFound                  // no such thing, or not the caller's
	Conflict                  // it exists already, or is in use
	Forbidden                 // the caller may not do this
)

// Error is a refusal a user can act on.
type Error struct {
	Kind Kind
	Code string // stable, e.g. name_taken (apitypes.Code*)
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func refuse(k Kind, code, msg string) *Error { return &Error{Kind: k, Code: code, Msg: msg} }

// IsKind reports whether err is a refusal of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

// Options configure a Service.
type Options struct {
	Store *store.Store
	Log   *slog.Logger
}

// Service is the domain operations over one store.
type Service struct {
	st  *store.Store
	log *slog.Logger
}

// New returns a service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Service{st: o.Store, log: o.Log.With("component", "service")}
}
