// Package cartridge describes the add-on services an app can run beside
// its web gears (PostgreSQL, Redis): how each is started inside a gear of
// the app (same user, same isolation, data in the app's data directory),
// which port it listens on, and the environment that tells the app's gears
// where it is, under Gantry's and OpenShift's names. It is pure: the agent
// runs what it describes.
package cartridge

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Names are the cartridges one can add.
var Names = []string{"postgresql", "redis"}

// Known reports whether name is a cartridge.
func Known(name string) bool {
	for _, n := range Names {
		if n == name {
			return true
		}
	}
	return false
}

// DefaultPort is where a cartridge listens in its own gear.
func DefaultPort(name string) int {
	switch name {
	case "postgresql":
		return 5432
	case "redis":
		return 6379
	}
	return 0
}

// Credentials are generated per app and cartridge.
type Credentials struct {
	User, Password, Database string
}

// NewCredentials makes credentials for an app's cartridge.
func NewCredentials(name, app string) Credentials {
	b := make([]byte, 18)
	rand.Read(b)
	c := Credentials{Password: hex.EncodeToString(b)}
	if name == "postgresql" {
		c.User, c.Database = "admin"+hex.EncodeToString(b[:3]), app
	}
	return c
}

// URL is the connection URL (with the password).
func URL(name, ip string, port int, c Credentials) string {
	host := ip + ":" + strconv.Itoa(port)
	switch name {
	case "postgresql":
		return (&url.URL{Scheme: "postgresql", User: url.UserPassword(c.User, c.Password), Host: host, Path: "/" + c.Database}).String()
	case "redis":
		return (&url.URL{Scheme: "redis", User: url.UserPassword("", c.Password), Host: host}).String()
	}
	return ""
}

// Env are the variables the app's gears get for a running cartridge.
func Env(name, ip string, port int, c Credentials) map[string]string {
	p := strconv.Itoa(port)
	u := URL(name, ip, port, c)
	switch name {
	case "postgresql":
		return map[string]string{
			"DATABASE_URL":                     u,
			"GANTRY_POSTGRESQL_URL":            u,
			"GANTRY_POSTGRESQL_IP":             ip,
			"GANTRY_POSTGRESQL_PORT":           p,
			"OPENSHIFT_POSTGRESQL_DB_HOST":     ip,
			"OPENSHIFT_POSTGRESQL_DB_PORT":     p,
			"OPENSHIFT_POSTGRESQL_DB_USERNAME": c.User,
			"OPENSHIFT_POSTGRESQL_DB_PASSWORD": c.Password,
			"OPENSHIFT_POSTGRESQL_DB_URL":      u,
			"PGDATABASE":                       c.Database,
		}
	case "redis":
		return map[string]string{
			"REDIS_URL":            u,
			"GANTRY_REDIS_URL":     u,
			"GANTRY_REDIS_IP":      ip,
			"GANTRY_REDIS_PORT":    p,
			"OPENSHIFT_REDIS_HOST": ip,
			"OPENSHIFT_REDIS_PORT": p,
			"REDIS_PASSWORD":       c.Password,
		}
	}
	return nil
}

// Start returns the shell command that runs the cartridge in its gear,
// listening on ip:port, with its data under dataDir (created on the first
// start: initdb, the app's database). secretFile holds the password.
func Start(name, ip string, port int, dataDir, secretFile string, c Credentials) (string, error) {
	q := shellQuote
	switch name {
	case "postgresql":
		bin, err := postgresBin()
		if err != nil {
			return "", err
		}
		return strings.Join([]string{
			"set -e",
			"D=" + q(dataDir),
			"if [ ! -f \"$D/PG_VERSION\" ]; then",
			"  " + q(bin+"/initdb") + " -D \"$D\" -U " + q(c.User) + " --pwfile=" + q(secretFile) + " --auth=scram-sha-256 -E UTF8 >/dev/null",
			"  echo " + q("CREATE DATABASE \""+c.Database+"\";") + " | " + q(bin+"/postgres") + " --single -D \"$D\" postgres >/dev/null",
			"  echo \"host all all 0.0.0.0/0 scram-sha-256\" >> \"$D/pg_hba.conf\"",
			"fi",
			// A gear restarted after a crash is a new PID namespace: the
			// stale lock file's PID may now be another live process of
			// this gear (PostgreSQL would then refuse to start forever).
			// Only a live postgres holds the lock.
			"if [ -f \"$D/postmaster.pid\" ]; then",
			"  P=$(head -n 1 \"$D/postmaster.pid\")",
			"  [ \"$(cat /proc/$P/comm 2>/dev/null)\" = postgres ] || rm -f \"$D/postmaster.pid\"",
			"fi",
			"exec " + q(bin+"/postgres") + " -D \"$D\" -h " + q(ip) + " -p " + strconv.Itoa(port) + " -k ''", // TCP only: no Unix socket, no socket lock file
		}, "\n"), nil
	case "redis":
		return strings.Join([]string{
			"set -e",
			"mkdir -p " + q(dataDir),
			"exec redis-server --bind " + q(ip) + " --port " + strconv.Itoa(port) + " --dir " + q(dataDir) +
				" --appendonly yes --protected-mode no --save 60 1 --requirepass \"$(cat " + q(secretFile) + ")\"",
		}, "\n"), nil
	}
	return "", fmt.Errorf("unknown cartridge %q: choose %s", name, strings.Join(Names, " or "))
}

// postgresBin finds the PostgreSQL server binaries (Debian keeps them per
// major version).
func postgresBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		if p, err := os.Stat("/usr/bin/postgres"); err == nil && !p.IsDir() {
			return "/usr/bin", nil
		}
		return "", fmt.Errorf("PostgreSQL is not installed on the server (scripts/install-deps installs it)")
	}
	sort.Strings(matches)
	return filepath.Dir(matches[len(matches)-1]), nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
