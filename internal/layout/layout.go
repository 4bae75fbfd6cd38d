// Package layout names the files and directories under Gantry's data
// directory, so that every role agrees on where things are. It creates
// nothing by itself except through Ensure.
package layout

import (
	"os"
	"path/filepath"
)

// Layout is rooted at the server's data directory.
type Layout struct{ Root string }

func (l Layout) DB() string              { return filepath.Join(l.Root, "gantry.db") }
func (l Layout) HostKey() string         { return filepath.Join(l.Root, "ssh_host_ed25519_key") }
func (l Layout) PKI() string             { return filepath.Join(l.Root, "pki") }
func (l Layout) ACME() string            { return filepath.Join(l.Root, "acme") }
func (l Layout) Artifacts() string       { return filepath.Join(l.Root, "artifacts") }
func (l Layout) ImageLayers() string     { return filepath.Join(l.Root, "images", "layers") }
func (l Layout) OverlayKey() string      { return filepath.Join(l.Root, "overlay.key") }
func (l Layout) AccessLog() string       { return filepath.Join(l.Root, "logs", "access.log") }
func (l Layout) EgressLog() string       { return filepath.Join(l.Root, "logs", "egress.log") }
func (l Layout) RunDir() string          { return filepath.Join(l.Root, "run") }
func (l Layout) HookSocket() string      { return filepath.Join(l.Root, "run", "hook.sock") }
func (l Layout) AppDir(id string) string { return filepath.Join(l.Root, "apps", id) }
func (l Layout) Repo(id string) string   { return filepath.Join(l.AppDir(id), "repo.git") }
func (l Layout) Deployments(id string) string {
	return filepath.Join(l.AppDir(id), "deployments")
}
func (l Layout) Deployment(id, dep string) string { return filepath.Join(l.Deployments(id), dep) }

// Data is the app's persistent directory (GANTRY_DATA_DIR), kept across
// deploys.
func (l Layout) Data(id string) string  { return filepath.Join(l.AppDir(id), "data") }
func (l Layout) Logs(id string) string  { return filepath.Join(l.AppDir(id), "logs") }
func (l Layout) Cache(id string) string { return filepath.Join(l.AppDir(id), "cache") }
func (l Layout) Tmp(id string) string   { return filepath.Join(l.AppDir(id), "tmp") }

// Home is the app's home directory (HOME in its gears).
func (l Layout) Home(id string) string { return filepath.Join(l.AppDir(id), "home") }

// RuncRoot keeps runc's state of namespaced gears.
func (l Layout) RuncRoot() string { return filepath.Join(l.Root, "run", "runc") }

func (l Layout) GearsDir() string      { return filepath.Join(l.Root, "gears") }
func (l Layout) Gear(id string) string { return filepath.Join(l.Root, "gears", id) }

// EnsureApp creates an app's directories.
func (l Layout) EnsureApp(id string) error {
	for _, d := range []string{l.Deployments(id), l.Data(id), l.Logs(id), l.Cache(id), l.Tmp(id), l.Home(id)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	return nil
}
