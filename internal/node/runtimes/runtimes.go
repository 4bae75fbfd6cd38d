// Package runtimes finds the language runtimes a machine offers and picks
// the one an app asks for. A runtimes directory (`gantry server
// --runtimes`) holds trees named LANG-VERSION (node-22/, python-3.11/,
// go-1.26/), each with its binary in bin/ and mounted read-only into the
// gears that use it; the host's own toolchains count too. A runtime's
// version is what its binary reports, so a tree is what it says it is.
package runtimes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// Languages with versions.
const (
	Node   = "nodejs"
	Python = "python"
	Go     = "go"
)

// Runtime is one installed version of a language.
type Runtime struct {
	Lang    string `json:"language"`
	Version string `json:"version"` // e.g. 22.4.1
	// Root is the tree in the runtimes directory ("" for the host's); Bin
	// the directory of its binaries.
	Root   string `json:"root,omitempty"`
	Bin    string `json:"bin"`
	Source string `json:"source"` // the tree's name, or "host"
}

// binaries are what each language runs to say its version.
var binaries = map[string]struct {
	name string
	args []string
}{
	Node:   {"node", []string{"--version"}},
	Python: {"python3", []string{"--version"}},
	Go:     {"go", []string{"version"}},
}

var prefixes = map[string]string{"node": Node, "python": Python, "go": Go}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// version runs bin to learn the version it reports.
func version(lang, bin string) (string, error) {
	b := binaries[lang]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, b.name), b.args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", filepath.Join(bin, b.name), strings.Join(b.args, " "), err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("%s says no version: %q", filepath.Join(bin, b.name), strings.TrimSpace(string(out)))
	}
	if m[3] == "" {
		m[3] = "0"
	}
	return m[1] + "." + m[2] + "." + m[3], nil
}

// Discover lists the runtimes in dir (LANG-VERSION trees) and on the host:
// in hostPath, the PATH gears run with (namespaced gears see only the
// host's /usr, so a toolchain elsewhere on the server's PATH is not
// theirs), and /usr/local/go/bin for Go. Trees that are not runtimes are
// reported in problems, each saying what is wrong.
func Discover(dir, hostPath string) (rts []Runtime, problems []error) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "-")
		lang := prefixes[prefix]
		if !e.IsDir() || !ok || lang == "" {
			continue
		}
		root := filepath.Join(dir, e.Name())
		bin := filepath.Join(root, "bin")
		v, err := version(lang, bin)
		if err != nil {
			problems = append(problems, fmt.Errorf("runtime %s has no working %s in bin/: %v", e.Name(), binaries[lang].name, err))
			continue
		}
		rts = append(rts, Runtime{Lang: lang, Version: v, Root: root, Bin: bin, Source: e.Name()})
	}
	for lang, b := range binaries {
		bin := ""
		for _, d := range append(filepath.SplitList(hostPath), "/usr/local/go/bin") {
			if fi, err := os.Stat(filepath.Join(d, b.name)); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				bin = d
				break
			}
		}
		if bin == "" {
			continue
		}
		if v, err := version(lang, bin); err == nil {
			rts = append(rts, Runtime{Lang: lang, Version: v, Bin: bin, Source: "host"})
		}
	}
	sort.Slice(rts, func(i, j int) bool {
		if rts[i].Lang != rts[j].Lang {
			return rts[i].Lang < rts[j].Lang
		}
		return semver.MustParse(rts[i].Version).GreaterThan(semver.MustParse(rts[j].Version))
	})
	return rts, problems
}

// Want is what an app asks of a language's version: a constraint in the
// ecosystem's own notation, and where it said so.
type Want struct {
	Lang       string
	Constraint string // npm range (Node.js), a version prefix (Python), a minimum (Go)
	From       string // e.g. `engines: ">=20"`
}

// Pick chooses the runtime for w among rts: the newest that satisfies
// it; without a constraint, the host's (as before versions existed), else
// the newest. None: an error listing what there is.
func Pick(w Want, rts []Runtime) (Runtime, error) {
	var cands []Runtime
	for _, r := range rts {
		if r.Lang == w.Lang {
			cands = append(cands, r)
		}
	}
	if w.Constraint == "" {
		for _, r := range cands {
			if r.Source == "host" {
				return r, nil
			}
		}
		if len(cands) > 0 {
			return cands[0], nil
		}
		return Runtime{}, fmt.Errorf("no %s runtime on this machine", w.Lang)
	}
	match, err := matcher(w)
	if err != nil {
		return Runtime{}, err
	}
	for _, r := range cands { // newest first
		if match(semver.MustParse(r.Version)) {
			return r, nil
		}
	}
	var have []string
	for _, r := range cands {
		have = append(have, r.Version+" ("+r.Source+")")
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return Runtime{}, fmt.Errorf("no %s satisfies %s: available here: %s (an admin adds versions to the runtimes directory, `gantry server --runtimes`)", w.Lang, w.From, strings.Join(have, ", "))
}

func matcher(w Want) (func(*semver.Version) bool, error) {
	switch w.Lang {
	case Node:
		c, err := semver.NewConstraint(w.Constraint)
		if err != nil {
			return nil, fmt.Errorf("%s is not a version range: %v", w.From, err)
		}
		return c.Check, nil
	case Go: // the go and toolchain lines are minimums
		min, err := semver.NewVersion(strings.TrimPrefix(w.Constraint, "go"))
		if err != nil {
			return nil, fmt.Errorf("%s is not a Go version: %v", w.From, err)
		}
		return func(v *semver.Version) bool { return !v.LessThan(min) }, nil
	default: // Python: 3.11 means any 3.11.x; 3.11.4 that one
		parts := strings.Split(strings.TrimSpace(w.Constraint), ".")
		if len(parts) < 2 || !versionRE.MatchString(w.Constraint) {
			return nil, fmt.Errorf("%s is not a Python version such as 3.11 or 3.11.4", w.From)
		}
		return func(v *semver.Version) bool {
			have := []uint64{v.Major(), v.Minor(), v.Patch()}
			for i, p := range parts {
				if i > 2 || p != fmt.Sprint(have[i]) {
					return false
				}
			}
			return true
		}, nil
	}
}
