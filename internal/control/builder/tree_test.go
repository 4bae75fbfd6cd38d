package builder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A push is a hostile tree: links in it must never make the server (root)
// read or list anything outside it, and errors must not quote what lies
// there.
func TestTreeRefusesLinksOut(t *testing.T) {
	outside := t.TempDir()
	secret := "TOPSECRET-password-line"
	os.WriteFile(filepath.Join(outside, ".postgresql.secret"), []byte("web: "+secret+"\n"), 0o600)
	os.WriteFile(filepath.Join(outside, "package.json"), []byte(`{"scripts":{"start":"node `+secret+`"}}`), 0o600)
	os.MkdirAll(filepath.Join(outside, "hooks", secret), 0o755)
	os.WriteFile(filepath.Join(outside, "hooks", "build"), []byte("#!/bin/sh\n"), 0o755)

	cases := []struct {
		name  string
		setup func(dir string)
		call  func(dir string) (string, error)
	}{
		{"procfile-absolute", func(dir string) {
			os.Symlink(filepath.Join(outside, ".postgresql.secret"), filepath.Join(dir, "Procfile"))
		}, detect},
		{"procfile-relative", func(dir string) {
			rel, _ := filepath.Rel(dir, filepath.Join(outside, ".postgresql.secret"))
			os.Symlink(rel, filepath.Join(dir, "Procfile"))
		}, detect},
		{"procfile-proc", func(dir string) {
			os.Symlink("/proc/self/environ", filepath.Join(dir, "Procfile"))
		}, detect},
		{"procfile-shadow", func(dir string) {
			os.Symlink("/etc/shadow", filepath.Join(dir, "Procfile"))
		}, detect},
		{"package-json", func(dir string) {
			os.Symlink(filepath.Join(outside, "package.json"), filepath.Join(dir, "package.json"))
		}, detect},
		{"directory-link", func(dir string) {
			os.Symlink(outside, filepath.Join(dir, "conf"))
			os.Symlink("conf/.postgresql.secret", filepath.Join(dir, "Procfile"))
		}, detect},
		{"hook-dir", func(dir string) {
			os.MkdirAll(filepath.Join(dir, ".gantry"), 0o755)
			os.Symlink(filepath.Join(outside, "hooks"), filepath.Join(dir, ".gantry", "action_hooks"))
		}, hooks},
		{"hook-file", func(dir string) {
			os.MkdirAll(filepath.Join(dir, ".openshift", "action_hooks"), 0o755)
			os.Symlink(filepath.Join(outside, "hooks", "build"), filepath.Join(dir, ".openshift", "action_hooks", "build"))
		}, hooks},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "index.html"), []byte("hi"), 0o644)
			c.setup(dir)
			out, err := c.call(dir)
			if err == nil {
				t.Fatalf("accepted: %s", out)
			}
			if !errors.Is(err, errOutside) {
				t.Errorf("error %q; want one that says the link leads out of the repository", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(out, secret) {
				t.Errorf("outside content leaked: %q %q", err, out)
			}
		})
	}
}

func detect(dir string) (string, error) {
	p, err := Detect(dir, "", "static-server")
	if err != nil {
		return "", err
	}
	return p.Start, nil
}

func hooks(dir string) (string, error) {
	h, err := FindHooks(dir)
	if err != nil {
		return "", err
	}
	return strings.Join(h.Warnings, ";") + h.Paths["build"], nil
}

func TestTreeFollowsLinksInside(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "deploy"), 0o755)
	os.WriteFile(filepath.Join(dir, "deploy", "Procfile"), []byte("web: ./run\n"), 0o644)
	os.Symlink("deploy/Procfile", filepath.Join(dir, "Procfile"))
	os.MkdirAll(filepath.Join(dir, "scripts"), 0o755)
	os.WriteFile(filepath.Join(dir, "scripts", "build.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.MkdirAll(filepath.Join(dir, ".gantry", "action_hooks"), 0o755)
	os.Symlink("../../scripts/build.sh", filepath.Join(dir, ".gantry", "action_hooks", "build"))
	p, err := Detect(dir, "", "x")
	if err != nil || p.Start != "./run" {
		t.Fatalf("Detect through a link inside: %+v, %v", p, err)
	}
	h, err := FindHooks(dir)
	if err != nil || h.Paths["build"] != filepath.Join(dir, ".gantry", "action_hooks", "build") {
		t.Fatalf("FindHooks through a link inside: %+v, %v", h, err)
	}
}

func TestPackageJSONErrorQuotesNothing(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": SECRETVALUE}`), 0o644)
	_, err := Detect(dir, "", "x")
	if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "byte") {
		t.Fatalf("error %v; want the byte offset and no content", err)
	}
}
