package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// Domain is a domain with its count of apps.
type Domain struct {
	store.Domain
	Apps int
}

// Domains lists the caller's domains.
func (s *Service) Domains(caller *store.User) ([]Domain, error) {
	var out []Domain
	err := s.st.View(func(tx *store.Tx) error {
		ds, err := store.ListDomains(tx)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.Owner != caller.Name {
				continue
			}
			apps, _ := store.ListDomainApps(tx, d.Name)
			out = append(out, Domain{Domain: d, Apps: len(apps)})
		}
		return nil
	})
	return out, err
}

// CreateDomain creates a domain owned by the caller.
func (s *Service) CreateDomain(caller *store.User, name string) (store.Domain, error) {
	if err := names.Label("domain", name); err != nil {
		return store.Domain{}, refuse(Invalid, apitypes.CodeInvalid, err.Error())
	}
	d := store.Domain{Name: name, Owner: caller.Name, Created: time.Now().UTC()}
	err := s.st.Update(func(tx *store.Tx) error { return tx.Create(store.DomainKey(d.Name), &d) })
	if errors.Is(err, store.ErrExists) {
		return store.Domain{}, refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("domain %q is taken: choose another name", d.Name))
	}
	return d, err
}

// DeleteDomain deletes one of the caller's domains once it has no app.
func (s *Service) DeleteDomain(caller *store.User, name string) error {
	return s.st.Update(func(tx *store.Tx) error {
		var d store.Domain
		if err := tx.Get(store.DomainKey(name), &d); err != nil || d.Owner != caller.Name {
			return refuse(NotFound, "domain_not_found", fmt.Sprintf("you have no domain %q: see `gantry domain list`", name))
		}
		apps, err := store.ListDomainApps(tx, name)
		if err != nil {
			return err
		}
		if len(apps) > 0 {
			return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("domain %q still has %d apps: delete them first", name, len(apps)))
		}
		return tx.Delete(store.DomainKey(name))
	})
}
