package runtimes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
)

var goVersion = regexp.MustCompile(`^1\.\d+(\.\d+)?$`)

// FetchGo downloads Go `version` (as go.mod names it: 1.26 or 1.26.1)
// with the host's go through the module proxy the environment names
// (GOPROXY, GONOSUMDB…, as `go` itself does for GOTOOLCHAIN), into the
// runtimes directory dir as go-VERSION/, a tree like one an admin lays
// out: every app that asks for that version then uses it. It returns the
// tree.
func FetchGo(ctx context.Context, dir, version string, env []string) (string, error) {
	if !goVersion.MatchString(version) {
		return "", fmt.Errorf("%q is not a Go version to fetch", version)
	}
	if strings.Count(version, ".") == 1 {
		version += ".0" // go 1.26 means 1.26.0
	}
	dest := filepath.Join(dir, "go-"+version)
	if fi, err := os.Stat(filepath.Join(dest, "bin", "go")); err == nil && !fi.IsDir() {
		return dest, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".fetch-go-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	mod := "golang.org/toolchain@v0.0.1-go" + version + "." + runtime.GOOS + "-" + runtime.GOARCH
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = tmp
	cmd.Env = append(append([]string(nil), env...), "GOMODCACHE="+filepath.Join(tmp, "mod"), "GOFLAGS=-modcacherw", "GOTOOLCHAIN=local", "GO111MODULE=on")
	out, err := cmd.Output()
	var res struct{ Dir, Error string }
	json.Unmarshal(out, &res)
	switch {
	case res.Error != "":
		return "", fmt.Errorf("fetching Go %s: %s", version, res.Error)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("fetching Go %s: %v: %s", version, err, ee.Stderr)
		}
		return "", fmt.Errorf("fetching Go %s: %w", version, err)
	case res.Dir == "":
		return "", fmt.Errorf("fetching Go %s: go mod download said nothing", version)
	}
	if _, err := os.Stat(filepath.Join(res.Dir, "bin", "go")); err != nil {
		return "", fmt.Errorf("fetching Go %s: the toolchain has no bin/go", version)
	}
	// A module zip keeps no modes: the programs get theirs back, as go's
	// own toolchain switch does; nothing stays writable but by root.
	err = filepath.WalkDir(res.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(res.Dir, p)
		switch {
		case d.IsDir():
			return os.Chmod(p, 0o755)
		case strings.HasPrefix(rel, "bin"+string(filepath.Separator)) || strings.HasPrefix(rel, filepath.Join("pkg", "tool")+string(filepath.Separator)):
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	if err != nil {
		return "", err
	}
	if err := os.Rename(res.Dir, dest); err != nil {
		if _, serr := os.Stat(filepath.Join(dest, "bin", "go")); serr == nil {
			return dest, nil // another build fetched it meanwhile
		}
		return "", err
	}
	return dest, nil
}
