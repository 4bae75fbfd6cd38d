package cartridge

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func init() {
	register(&Descriptor{Name: "postgresql", Port: 5432, HasUser: true,
		URL: func(host string, c Credentials) string {
			return (&url.URL{Scheme: "postgresql", User: url.UserPassword(c.User, c.Password), Host: host, Path: "/" + c.Database}).String()
		},
		Env: func(ip, port, u string, c Credentials) map[string]string {
			return map[string]string{
				"DATABASE_URL":                     u,
				"GANTRY_POSTGRESQL_URL":            u,
				"GANTRY_POSTGRESQL_IP":             ip,
				"GANTRY_POSTGRESQL_PORT":           port,
				"OPENSHIFT_POSTGRESQL_DB_HOST":     ip,
				"OPENSHIFT_POSTGRESQL_DB_PORT":     port,
				"OPENSHIFT_POSTGRESQL_DB_USERNAME": c.User,
				"OPENSHIFT_POSTGRESQL_DB_PASSWORD": c.Password,
				"OPENSHIFT_POSTGRESQL_DB_URL":      u,
				"PGDATABASE":                       c.Database,
			}
		},
		Start: startPostgreSQL,
	})
}

// startPostgreSQL runs initdb and creates the app's database on the first
// start, then the server on TCP only.
func startPostgreSQL(ip string, port int, dataDir, secretFile string, c Credentials) (string, error) {
	q := shellQuote
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
