// Package names validates the names users choose: domains, apps, hostnames,
// environment variables. Each check returns an error that says what a valid
// name looks like, so the message can go straight to the user.
package names

import (
	"fmt"
	"regexp"
	"strings"
)

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Label checks a DNS label as used for app and domain names: 1 to 63
// characters, lowercase letters, digits and hyphens, not starting or ending
// with a hyphen.
func Label(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s name is empty: use 1 to 63 lowercase letters, digits or hyphens", kind)
	case len(s) > 63:
		return fmt.Errorf("%s name %q is %d characters long: use at most 63", kind, s, len(s))
	case strings.ToLower(s) != s && labelRE.MatchString(strings.ToLower(s)):
		return fmt.Errorf("%s name %q has uppercase letters: use %q", kind, s, strings.ToLower(s))
	case !labelRE.MatchString(s):
		return fmt.Errorf("%s name %q is not valid: use lowercase letters, digits and hyphens, starting and ending with a letter or digit", kind, s)
	}
	return nil
}

// CanonicalHost is the hostname an app gets: APP-DOMAIN.CLOUD. The first
// label must itself be a valid DNS label.
func CanonicalHost(app, domain, cloud string) (string, error) {
	label := app + "-" + domain
	if len(label) > 63 {
		return "", fmt.Errorf("app %q in domain %q makes the hostname label %q, %d characters long: DNS allows 63, choose a shorter app name", app, domain, label, len(label))
	}
	return label + "." + cloud, nil
}

// Hostname checks a fully qualified hostname (IDNs in punycode are fine).
func Hostname(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return fmt.Errorf("hostname %q is not valid: it must be 1 to 253 characters", s)
	}
	for _, l := range strings.Split(s, ".") {
		if err := Label("hostname", strings.ToLower(l)); err != nil {
			return fmt.Errorf("hostname %q is not valid: each dot-separated part must be 1 to 63 letters, digits or hyphens", s)
		}
	}
	return nil
}

var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are names the platform sets for every gear.
var reservedEnv = map[string]bool{
	"PATH": true, "HOME": true, "PORT": true, "USER": true, "SHELL": true,
	"PWD": true, "HOSTNAME": true, "TMPDIR": true, "LOGNAME": true,
}

// Limits on user environment variables.
const (
	MaxEnvName  = 128
	MaxEnvValue = 32 << 10
	MaxEnvTotal = 256 << 10
)

// EnvName checks a user-set environment variable name.
func EnvName(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("environment variable name is empty")
	case len(k) > MaxEnvName:
		return fmt.Errorf("environment variable name %.20q… is %d characters: use at most %d", k, len(k), MaxEnvName)
	case !envRE.MatchString(k):
		return fmt.Errorf("environment variable name %q is not valid: use letters, digits and underscores, not starting with a digit", k)
	case reservedEnv[k]:
		return fmt.Errorf("environment variable %s is set by the platform and cannot be changed", k)
	case strings.HasPrefix(k, "GANTRY_") || strings.HasPrefix(k, "OPENSHIFT_"):
		return fmt.Errorf("environment variable %s is reserved: names starting with GANTRY_ or OPENSHIFT_ are set by the platform", k)
	}
	return nil
}

// Env checks a whole set of user variables: names, value sizes, total size.
func Env(env map[string]string) error {
	total := 0
	for k, v := range env {
		if err := EnvName(k); err != nil {
			return err
		}
		if len(v) > MaxEnvValue {
			return fmt.Errorf("value of %s is %d bytes: use at most %d (store larger data in a file in GANTRY_DATA_DIR)", k, len(v), MaxEnvValue)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("value of %s contains a NUL byte, which environment variables cannot hold", k)
		}
		total += len(k) + len(v)
	}
	if total > MaxEnvTotal {
		return fmt.Errorf("environment variables total %d bytes: use at most %d", total, MaxEnvTotal)
	}
	return nil
}

// Alias checks a custom hostname for an app and returns it normalised
// (lowercase, no trailing dot). IDNs must be in punycode (xn--…). A
// wildcard is allowed only as a whole leftmost label (*.shop.example.com),
// over at least two more labels. Names under the cloud domain are the
// platform's (canonical app names) and addresses are not hostnames.
func Alias(s, cloud string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	for _, r := range h {
		if r > 127 {
			return "", fmt.Errorf("hostname %q has non-ASCII characters: write international names in punycode (xn--…), e.g. with `idn2 %s`", s, s)
		}
	}
	rest := h
	if strings.Contains(h, "*") {
		var ok bool
		rest, ok = strings.CutPrefix(h, "*.")
		if !ok || strings.Contains(rest, "*") {
			return "", fmt.Errorf("hostname %q uses a wildcard wrongly: only a whole first label may be *, as in *.example.com", s)
		}
		if strings.Count(rest, ".") < 1 {
			return "", fmt.Errorf("wildcard %q is too broad: it needs at least two labels after *., as in *.example.com", s)
		}
	}
	if err := Hostname(rest); err != nil {
		return "", err
	}
	labels := strings.Split(rest, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("hostname %q is not a fully qualified name: use a name with a dot, such as www.example.com", s)
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return "", fmt.Errorf("%q is an IP address, not a hostname: aliases are names that resolve to this platform", s)
	}
	cloud = strings.ToLower(strings.TrimSuffix(cloud, "."))
	if h == cloud || strings.HasSuffix(h, "."+cloud) || rest == cloud {
		return "", fmt.Errorf("%s is under the platform's cloud domain %s, where names belong to apps: use your own domain", h, cloud)
	}
	return h, nil
}
