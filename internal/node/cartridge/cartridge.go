// Package cartridge describes the add-on services an app can run beside
// its web gears (PostgreSQL, Redis): how each is started inside a gear of
// the app (same user, same isolation, data in the app's data directory),
// which port it listens on, and the environment that tells the app's gears
// where it is, under Gantry's and OpenShift's names. Each add-on is one
// Descriptor in a table (postgresql.go, redis.go); adding one is adding a
// file. It is pure: the agent runs what it describes.
//
// (An app's language type, nodejs or python, is what the builder detects;
// the builder calls those "types", not cartridges.)
package cartridge

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Credentials are generated per app and cartridge.
type Credentials struct {
	User, Password, Database string
}

// Descriptor is one add-on service.
type Descriptor struct {
	Name string
	// Port is where it listens in its own gear.
	Port int
	// HasUser: its credentials have a user and a database (the app's
	// name), not only a password.
	HasUser bool
	// URL is the connection URL for host (IP:port), with the password.
	URL func(host string, c Credentials) string
	// Env are the variables the app's gears get, given the address, the
	// port, the URL and the credentials.
	Env func(ip, port, url string, c Credentials) map[string]string
	// Start is the shell command that runs it in its gear, listening on
	// ip:port, with its data under dataDir (created on the first start).
	// secretFile holds the password.
	Start func(ip string, port int, dataDir, secretFile string, c Credentials) (string, error)
}

// table holds every add-on by name; each file registers its own.
var table = map[string]*Descriptor{}

func register(d *Descriptor) { table[d.Name] = d }

// Names are the cartridges one can add, sorted.
func Names() []string {
	var out []string
	for n := range table {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Lookup finds a cartridge by name.
func Lookup(name string) (*Descriptor, error) {
	if d := table[name]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("unknown cartridge %q: choose %s", name, strings.Join(Names(), " or "))
}

// Known reports whether name is a cartridge.
func Known(name string) bool { return table[name] != nil }

// DefaultPort is where a cartridge listens in its own gear (0: unknown).
func DefaultPort(name string) int {
	if d := table[name]; d != nil {
		return d.Port
	}
	return 0
}

// NewCredentials makes credentials for an app's cartridge.
func NewCredentials(name, app string) Credentials {
	b := make([]byte, 18)
	rand.Read(b)
	c := Credentials{Password: hex.EncodeToString(b)}
	if d := table[name]; d != nil && d.HasUser {
		c.User, c.Database = "admin"+hex.EncodeToString(b[:3]), app
	}
	return c
}

// URL is the connection URL (with the password); "" for an unknown name.
func URL(name, ip string, port int, c Credentials) string {
	if d := table[name]; d != nil {
		return d.URL(ip+":"+strconv.Itoa(port), c)
	}
	return ""
}

// Env are the variables the app's gears get for a running cartridge.
func Env(name, ip string, port int, c Credentials) map[string]string {
	d := table[name]
	if d == nil {
		return nil
	}
	return d.Env(ip, strconv.Itoa(port), d.URL(ip+":"+strconv.Itoa(port), c), c)
}

// Start returns the shell command that runs the cartridge in its gear.
func Start(name, ip string, port int, dataDir, secretFile string, c Credentials) (string, error) {
	d, err := Lookup(name)
	if err != nil {
		return "", err
	}
	return d.Start(ip, port, dataDir, secretFile, c)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
