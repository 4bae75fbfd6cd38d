package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// The store's key layout lives here and in the records' Key methods: no
// other package spells a key (the architecture test holds them to it).

// UserKey is the store key of a user.
func UserKey(name string) string { return "users/" + name }

// TokenKey is the store key of an API token, by its hash.
func TokenKey(hash string) string { return "tokens/" + hash }

// HostKey is the store key of a hostname's owner record: one app holds
// each name (canonical, alias, or TCP route SNI).
func HostKey(name string) string { return "hosts/" + name }

// DomainKey is the store key of a domain.
func DomainKey(name string) string { return "domains/" + name }

// SSHKeyKey is the store key of an SSH key, by its SHA256 fingerprint.
func SSHKeyKey(fingerprint string) string { return "sshkeys/" + fingerprint }

// TCPRouteKey is the store key of a TCP route by its ID (port-N, sni-HOST,
// or a bare port number).
func TCPRouteKey(id string) string {
	if _, err := strconv.Atoi(id); err == nil {
		return "tcproutes/port-" + id
	}
	return "tcproutes/" + id
}

// ID is the route's ID as users see it: port-N or sni-HOST.
func (r *TCPRoute) ID() string { return strings.TrimPrefix(r.Key(), "tcproutes/") }

// AppName is DOMAIN/NAME of an app's key.
func AppName(appKey string) string { return strings.TrimPrefix(appKey, "apps/") }

// ListApps lists every app.
func ListApps(tx *Tx) ([]App, error) { return List[App](tx, "apps/") }

// ListDomainApps lists the apps of one domain.
func ListDomainApps(tx *Tx, domain string) ([]App, error) {
	return List[App](tx, "apps/"+domain+"/")
}

// ListGears lists every gear.
func ListGears(tx *Tx) ([]Gear, error) { return List[Gear](tx, "gears/") }

// ListDeployments lists an app's deployments, oldest first.
func ListDeployments(tx *Tx, appID string) ([]Deployment, error) {
	return List[Deployment](tx, "deployments/"+appID+"/")
}

// ListAllDeployments lists every app's deployments.
func ListAllDeployments(tx *Tx) ([]Deployment, error) { return List[Deployment](tx, "deployments/") }

// ListDomains lists every domain.
func ListDomains(tx *Tx) ([]Domain, error) { return List[Domain](tx, "domains/") }

// ListUsers lists every user.
func ListUsers(tx *Tx) ([]User, error) { return List[User](tx, "users/") }

// ListSSHKeys lists every user's SSH keys.
func ListSSHKeys(tx *Tx) ([]SSHKey, error) { return List[SSHKey](tx, "sshkeys/") }

// ListAliases lists every alias.
func ListAliases(tx *Tx) ([]Alias, error) { return List[Alias](tx, "aliases/") }

// ListCerts lists every alias certificate.
func ListCerts(tx *Tx) ([]Cert, error) { return List[Cert](tx, "certs/") }

// ListTCPRoutes lists every TCP route.
func ListTCPRoutes(tx *Tx) ([]TCPRoute, error) { return List[TCPRoute](tx, "tcproutes/") }

// ListClaims lists every DNS-name claim.
func ListClaims(tx *Tx) ([]NameClaim, error) { return List[NameClaim](tx, "claims/") }

// ListRestores lists the restores under way.
func ListRestores(tx *Tx) ([]RestoreJournal, error) { return List[RestoreJournal](tx, "restores/") }

// CountSnapshots counts every app's snapshot records.
func CountSnapshots(tx *Tx) (int, error) {
	n := 0
	err := tx.Scan("snapshots/", func(string, []byte) error { n++; return nil })
	return n, err
}

// ListTokens lists every API token by its hash.
func ListTokens(tx *Tx) (map[string]Token, error) {
	out := map[string]Token{}
	err := tx.Scan("tokens/", func(key string, raw []byte) error {
		var t Token
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		out[strings.TrimPrefix(key, "tokens/")] = t
		return nil
	})
	return out, err
}

// ListSnapshots lists an app's snapshot records.
func ListSnapshots(tx *Tx, appID string) ([]SnapshotRecord, error) {
	return List[SnapshotRecord](tx, "snapshots/"+appID+"/")
}

// ListCron lists the status of an app's cron jobs.
func ListCron(tx *Tx, appID string) ([]CronStatus, error) {
	return List[CronStatus](tx, "cron/"+appID+"/")
}

// DeleteCron removes the status of an app's cron jobs.
func DeleteCron(tx *Tx, appID string) error {
	var keys []string
	if err := tx.Scan("cron/"+appID+"/", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ListEvents lists an app's events, oldest first.
func ListEvents(tx *Tx, appID string) ([]Event, error) { return List[Event](tx, "events/"+appID+"/") }

// TrimEvents deletes an app's oldest events beyond keep.
func TrimEvents(tx *Tx, appID string, keep int) error {
	var keys []string
	if err := tx.Scan("events/"+appID+"/", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		return err
	}
	sort.Strings(keys)
	for len(keys) > keep {
		if err := tx.Delete(keys[0]); err != nil {
			return err
		}
		keys = keys[1:]
	}
	return nil
}

// ServiceGear is the gear of an app's cartridge (service) name.
func ServiceGear(tx *Tx, appKey, service string) (*Gear, error) {
	gears, err := ListGears(tx)
	if err != nil {
		return nil, err
	}
	for _, g := range gears {
		if g.AppKey == appKey && g.Service == service {
			return &g, nil
		}
	}
	return nil, fmt.Errorf("no gear for cartridge %s: %w", service, ErrNotFound)
}

// GearSubnet is the cluster's gear subnet, recorded by the first machine
// that claimed a block of it ("" before).
func GearSubnet(tx *Tx) string {
	var v struct{ Subnet string }
	tx.Get("cluster/gear-subnet", &v)
	return v.Subnet
}

// SetGearSubnet records the cluster's gear subnet.
func SetGearSubnet(tx *Tx, subnet string) error {
	return tx.Put("cluster/gear-subnet", &struct{ Subnet string }{subnet})
}

// OverlayMode is the cluster's gear overlay (vxlan, wireguard), recorded
// by the first machine that chose it ("" before).
func OverlayMode(tx *Tx) string {
	var v struct{ Mode string }
	tx.Get("cluster/overlay", &v)
	return v.Mode
}

// SetOverlayMode records the cluster's gear overlay.
func SetOverlayMode(tx *Tx, mode string) error {
	return tx.Put("cluster/overlay", &struct{ Mode string }{mode})
}

// LastGearIP is the gear address given last (round-robin allocation, so
// a freed address is not given again at once); "" if none yet.
func LastGearIP(tx *Tx, node string) string {
	var last struct{ IP string }
	tx.Get(lastIPKey(node), &last)
	return last.IP
}

// lastIPKey is per machine in a cluster: machines allocate in their own
// blocks, and one key would make their transactions conflict.
func lastIPKey(node string) string {
	if node == "" {
		return "ipam/last"
	}
	return "ipam/last." + node
}

// SetLastGearIP records the gear address given last.
func SetLastGearIP(tx *Tx, node, ip string) error {
	return tx.Put(lastIPKey(node), &struct{ IP string }{ip})
}
