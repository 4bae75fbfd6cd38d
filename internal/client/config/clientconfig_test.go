package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoadPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "config.json")
	if _, err := Load(path); !errors.Is(err, ErrNone) {
		t.Fatalf("missing config: %v; want ErrNone", err)
	}
	if err := Save(path, &Config{Server: "http://x", Token: "secret"}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	c, err := Load(path)
	if err != nil || c.Server != "http://x" || c.Token != "secret" {
		t.Errorf("loaded %+v, %v", c, err)
	}
}
