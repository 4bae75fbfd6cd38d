package cartridge

import (
	"net/url"
	"strconv"
	"strings"
)

func init() {
	register(&Descriptor{Name: "redis", Port: 6379,
		URL: func(host string, c Credentials) string {
			return (&url.URL{Scheme: "redis", User: url.UserPassword("", c.Password), Host: host}).String()
		},
		Env: func(ip, port, u string, c Credentials) map[string]string {
			return map[string]string{
				"REDIS_URL":            u,
				"GANTRY_REDIS_URL":     u,
				"GANTRY_REDIS_IP":      ip,
				"GANTRY_REDIS_PORT":    port,
				"OPENSHIFT_REDIS_HOST": ip,
				"OPENSHIFT_REDIS_PORT": port,
				"REDIS_PASSWORD":       c.Password,
			}
		},
		Start: func(ip string, port int, dataDir, secretFile string, c Credentials) (string, error) {
			q := shellQuote
			return strings.Join([]string{
				"set -e",
				"mkdir -p " + q(dataDir),
				"exec redis-server --bind " + q(ip) + " --port " + strconv.Itoa(port) + " --dir " + q(dataDir) +
					" --appendonly yes --protected-mode no --save 60 1 --requirepass \"$(cat " + q(secretFile) + ")\"",
			}, "\n"), nil
		},
	})
}
