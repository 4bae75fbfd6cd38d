package names

import (
	"strings"
	"testing"
)

func TestLabel(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"blog", true}, {"a", true}, {"my-app2", true}, {"0day", true},
		{"", false}, {"-x", false}, {"x-", false}, {"Blog", false}, {"a_b", false},
		{"a.b", false}, {strings.Repeat("a", 63), true}, {strings.Repeat("a", 64), false},
		{"héllo", false}, {"xn--hllo-bpa", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			err := Label("app", tc.in)
			if (err == nil) != tc.ok {
				t.Errorf("Label(%q): got err %v; want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestLabelSuggestsLowercase(t *testing.T) {
	err := Label("app", "Blog")
	if err == nil || !strings.Contains(err.Error(), `"blog"`) {
		t.Errorf("got %v; want a suggestion of \"blog\"", err)
	}
}

func TestCanonicalHost(t *testing.T) {
	h, err := CanonicalHost("blog", "acme", "localhost")
	if err != nil || h != "blog-acme.localhost" {
		t.Errorf("got %q, %v; want blog-acme.localhost", h, err)
	}
	if _, err := CanonicalHost(strings.Repeat("a", 40), strings.Repeat("b", 30), "localhost"); err == nil {
		t.Error("a 71-character label was accepted")
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"DATABASE_URL", true}, {"_x", true}, {"a1", true},
		{"PATH", false}, {"PORT", false}, {"GANTRY_APP_NAME", false}, {"OPENSHIFT_DATA_DIR", false},
		{"1X", false}, {"A-B", false}, {"", false}, {"A=B", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if err := EnvName(tc.in); (err == nil) != tc.ok {
				t.Errorf("EnvName(%q): got %v; want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestEnvSizes(t *testing.T) {
	if err := Env(map[string]string{"A": strings.Repeat("x", MaxEnvValue+1)}); err == nil {
		t.Error("oversized value accepted")
	}
	big := map[string]string{}
	for i := 0; i < 10; i++ {
		big[string(rune('A'+i))] = strings.Repeat("x", MaxEnvValue)
	}
	if err := Env(big); err == nil {
		t.Error("oversized total accepted")
	}
	if err := Env(map[string]string{"A": "x\x00y"}); err == nil {
		t.Error("NUL byte accepted")
	}
}

func FuzzLabel(f *testing.F) {
	for _, s := range []string{"blog", "-", "a-b", "Ä", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Label("app", s) == nil {
			if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' || strings.ToLower(s) != s {
				t.Errorf("accepted invalid label %q", s)
			}
			for _, r := range s {
				if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
					t.Errorf("accepted %q with rune %q", s, r)
				}
			}
		}
	})
}

func FuzzHostname(f *testing.F) {
	for _, s := range []string{"www.example.com", "a..b", "xn--bcher-kva.example", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Hostname(s) == nil && strings.ContainsAny(s, " /:@\x00") {
			t.Errorf("accepted hostname %q", s)
		}
	})
}

func FuzzEnvName(f *testing.F) {
	f.Add("DATABASE_URL")
	f.Add("GANTRY_X")
	f.Fuzz(func(t *testing.T, s string) {
		if EnvName(s) == nil && (strings.ContainsAny(s, "= \x00") || strings.HasPrefix(s, "GANTRY_")) {
			t.Errorf("accepted env name %q", s)
		}
	})
}
