package service

import (
	"fmt"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Which names an alias makes its owner serve, and the rule that keeps
// users apart: a hostname one user serves (exactly, as the apex that
// redirects to their www. alias, or under their wildcard) cannot be added
// by another user, and wildcard and exact names of different users never
// overlap. The router picks an exact name over the apex redirect over a
// wildcard, so without this rule a second user could take a name's
// traffic by adding a more exact one. (One user's own apps may overlap:
// a wildcard on one app and a name under it on another is a normal set-up.)

// parentOf is the name without its first label ("" for a single label).
func parentOf(host string) string {
	if i := strings.IndexByte(host, '.'); i >= 0 {
		return host[i+1:]
	}
	return ""
}

// claim is a name an alias makes its app answer for, with how.
type claim struct{ name, how string }

// claims are the names an alias makes its app answer for: itself, and the
// apex of a www. alias.
func claims(alias string) []claim {
	out := []claim{{alias, "as an alias"}}
	if apex, ok := strings.CutPrefix(alias, "www."); ok && strings.Contains(apex, ".") {
		out = append(out, claim{apex, "as the domain that redirects to " + alias})
	}
	return out
}

// overlaps says whether a name claimed by one alias and a name claimed by
// another would meet in the router: the same name, or one a wildcard over
// the other (a wildcard covers one label).
func overlaps(a, b string) bool {
	if a == b {
		return true
	}
	if pa, ok := strings.CutPrefix(a, "*."); ok && !strings.HasPrefix(b, "*.") && parentOf(b) == pa {
		return true
	}
	if pb, ok := strings.CutPrefix(b, "*."); ok && !strings.HasPrefix(a, "*.") && parentOf(a) == pb {
		return true
	}
	return false
}

// hostConflict is the reason owner may not add host, given every alias on
// the platform ("" if it may). Aliases of owner itself never conflict
// here (the hosts/ record keeps one name to one app).
func hostConflict(host, owner string, aliases []store.Alias) string {
	mine := claims(host)
	for _, al := range aliases {
		if al.Owner == owner {
			continue
		}
		for _, mc := range mine {
			for _, tc := range claims(al.Host) {
				if overlaps(mc.name, tc.name) {
					what := "is served by another user's app"
					if mc.name != host {
						what = "would make " + mc.name + " redirect here, but " + mc.name + " is served by another user's app"
					}
					return fmt.Sprintf("%s %s (%s %s): a hostname belongs to one user; ask them to remove it, or the platform's admin if the domain is yours", host, what, tc.name, tc.how)
				}
			}
		}
	}
	return ""
}
