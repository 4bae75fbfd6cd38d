package service

import (
	"fmt"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/egress/policy"
)

// Egress is the enforcement of outbound policies (egress/enforce).
type Egress interface {
	Policy(app *store.App) (policy.Policy, error)
	Apply(appKey string) error
	ClearBlock(appKey string) error
}

// AddEgressRules inserts rules (all checked first: on any error nothing
// changes) after rule number after (0: before all), and applies the
// policy to the running gears.
func (s *Service) AddEgressRules(caller *store.User, domain, name string, req apitypes.EgressRulesRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if req.After < 0 || req.After > len(app.Egress) {
		return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("--after %d: the policy has %d rules", req.After, len(app.Egress)))
	}
	var add []store.EgressRule
	for _, text := range req.Rules {
		r := store.EgressRule{Action: req.Action, Rule: text}
		trial := *app
		trial.Egress = []store.EgressRule{r}
		p, err := s.o.Egress.Policy(&trial)
		if err != nil {
			return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error())
		}
		r.Rule = p.Rules[0].Text
		add = append(add, r)
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		after := min(req.After, len(app.Egress))
		app.Egress = append(append(append([]store.EgressRule{}, app.Egress[:after]...), add...), app.Egress[after:]...)
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, fmt.Errorf("saving egress rules: %w", err)
	}
	s.log.Info("egress rules added", "app", app.FullName(), "action", req.Action, "rules", strings.Join(req.Rules, " "), "user", caller.Name)
	if err := s.o.Egress.Apply(app.Key()); err != nil {
		return nil, fmt.Errorf("applying egress policy: %w", err)
	}
	return app, nil
}

// RemoveEgressRule removes rule n (from 1) and applies the policy.
func (s *Service) RemoveEgressRule(caller *store.User, domain, name string, n int) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		if n < 1 || n > len(app.Egress) {
			return refuse(NotFound, "rule_not_found", fmt.Sprintf("%s has no egress rule %d: see `gantry egress list %s`", app.Name, n, app.Name))
		}
		app.Egress = append(app.Egress[:n-1:n-1], app.Egress[n:]...)
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, err
	}
	if err := s.o.Egress.Apply(app.Key()); err != nil {
		return nil, fmt.Errorf("applying egress policy: %w", err)
	}
	return app, nil
}

// ClearEgressBlock lets an app flagged for a port scan out again (admins
// only; any user's app).
func (s *Service) ClearEgressBlock(caller *store.User, domain, name string) (*store.App, error) {
	if !caller.Admin {
		return nil, refuse(Forbidden, apitypes.CodeForbidden, "clearing an egress block needs an admin token")
	}
	var app store.App
	key := store.AppKey(domain, name)
	if err := s.st.View(func(tx *store.Tx) error { return tx.Get(key, &app) }); err != nil {
		return nil, refuse(NotFound, "app_not_found", fmt.Sprintf("no app %s/%s", domain, name))
	}
	if err := s.o.Egress.ClearBlock(app.Key()); err != nil {
		return nil, fmt.Errorf("clearing egress block: %w", err)
	}
	s.log.Info("egress block cleared", "app", app.FullName(), "user", caller.Name)
	err := s.st.View(func(tx *store.Tx) error { return tx.Get(key, &app) })
	return &app, err
}
