package runtimes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
)

// shim is a runtime tree whose binary reports version.
func shim(t *testing.T, dir, name, bin, version string) {
	t.Helper()
	p := filepath.Join(dir, name, "bin", bin)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+version+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverAndPick(t *testing.T) {
	dir := t.TempDir()
	shim(t, dir, "node-18", "node", "v18.19.0")
	shim(t, dir, "node-22", "node", "v22.4.1")
	shim(t, dir, "python-3.11", "python3", "Python 3.11.9")
	shim(t, dir, "go-1.26", "go", "go version go1.26.2 linux/amd64")
	os.MkdirAll(filepath.Join(dir, "node-20", "bin"), 0o755) // no binary
	rts, problems := Discover(dir, os.Getenv("PATH"))
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "node-20") {
		t.Errorf("problems: %v; want the tree without a binary", problems)
	}
	for _, tc := range []struct {
		want         Want
		version, err string
	}{
		{Want{Node, ">=20", `engines: ">=20"`}, "22.4.1", ""},
		{Want{Node, "^18.2", `engines: "^18.2"`}, "18.19.0", ""},
		{Want{Node, "18 || 22", ""}, "22.4.1", ""},
		{Want{Node, ">=30", `engines: ">=30"`}, "", "18.19.0 (node-18)"},
		{Want{Python, "3.11", ".python-version"}, "3.11.9", ""},
		{Want{Python, "3.10", ".python-version"}, "", "no python satisfies"},
		{Want{Go, "1.26", "go.mod"}, "", ""}, // the host's Go may be newer; checked below
		{Want{Go, "9.0", "go.mod"}, "", "no go satisfies"},
	} {
		got, err := Pick(tc.want, rts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v %v; want an error with %q", tc.want, got, err, tc.err)
			}
			continue
		}
		if err != nil || tc.version != "" && got.Version != tc.version {
			t.Errorf("%+v: %+v %v; want %s", tc.want, got, err, tc.version)
		}
	}
	if got, err := Pick(Want{Go, "1.26", "go.mod"}, rts); err != nil || semver.MustParse(got.Version).LessThan(semver.MustParse("1.26.0")) {
		t.Errorf("go >= 1.26: %+v %v", got, err)
	}
}
