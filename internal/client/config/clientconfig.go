// Package clientconfig reads and writes the CLI's configuration: which
// server to talk to and with which token. The server writes it at first
// start for the CLI on the same machine; `gantry login` writes it
// elsewhere. The file is private (0600): it holds a secret.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Config is the CLI's configuration.
type Config struct {
	Server string `json:"server"`
	Token  string `json:"token"`
	// User is informational, for `gantry login` output.
	User string `json:"user,omitempty"`
	// Insecure lets the CLI send the token over plain HTTP to a server
	// that is not on this machine (`gantry login --insecure`).
	Insecure bool `json:"insecure,omitempty"`
	// CA is a PEM certificate (the platform root, `gantry ca show`) the
	// CLI trusts besides the system's, for an https:// server whose
	// certificate the platform CA issued.
	CA string `json:"ca,omitempty"`
}

// EnvPath overrides the default location.
const EnvPath = "GANTRY_CONFIG"

// Path is where the configuration lives: $GANTRY_CONFIG, else
// $XDG_CONFIG_HOME/gantry/config.json (~/.config/gantry/config.json).
func Path() (string, error) {
	if p := os.Getenv(EnvPath); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the config directory: %w", err)
	}
	return filepath.Join(dir, "gantry", "config.json"), nil
}

// ErrNone means no configuration exists yet.
var ErrNone = errors.New("no client configuration")

// Load reads the configuration at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s is not valid: %w (remove it and run `gantry login`)", path, err)
	}
	return &c, nil
}

// Save writes the configuration with mode 0600, atomically.
func Save(path string, c *Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	os.Chmod(tmp, 0o600)
	return os.Rename(tmp, path)
}
