package cartridge

import (
	"strings"
	"testing"
)

// Every add-on in the table gives a URL, the variables the app's gears
// see, and a start command; unknown names are refused with the choice.
func TestTable(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "postgresql,redis" {
		t.Fatalf("Names() = %s", got)
	}
	c := Credentials{User: "u", Password: "p w", Database: "blog"}
	for _, tc := range []struct{ name, url, envKey string }{
		{"postgresql", "postgresql://u:p%20w@10.0.0.7:5432/blog", "DATABASE_URL"},
		{"redis", "redis://:p%20w@10.0.0.7:6379", "REDIS_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := DefaultPort(tc.name)
			if u := URL(tc.name, "10.0.0.7", port, c); u != tc.url {
				t.Errorf("URL = %s; want %s", u, tc.url)
			}
			env := Env(tc.name, "10.0.0.7", port, c)
			if env[tc.envKey] != tc.url || env["GANTRY_"+strings.ToUpper(tc.name)+"_IP"] != "10.0.0.7" {
				t.Errorf("Env = %v", env)
			}
			nc := NewCredentials(tc.name, "blog")
			if len(nc.Password) != 36 || (nc.Database == "blog") != (tc.name == "postgresql") {
				t.Errorf("NewCredentials = %+v", nc)
			}
		})
	}
	if cmd, err := Start("redis", "10.0.0.7", 6379, "/d", "/s", c); err != nil || !strings.Contains(cmd, "redis-server --bind '10.0.0.7' --port 6379") {
		t.Errorf("redis start: %q %v", cmd, err)
	}
	if _, err := Start("mysql", "10.0.0.7", 1, "/d", "/s", c); err == nil || !strings.Contains(err.Error(), "choose postgresql or redis") {
		t.Errorf("unknown cartridge: %v", err)
	}
}
