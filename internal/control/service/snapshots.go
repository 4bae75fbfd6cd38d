package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/gitrepo"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// snapshotMeta is what a snapshot says of its app (app.json in the
// snapshot, beside repo.bundle and postgresql.sql).
type snapshotMeta struct {
	Version    int               `json:"version"`
	App        store.App         `json:"app"`
	Deployment *store.Deployment `json:"deployment,omitempty"`
	Created    time.Time         `json:"created"`
}

// snapshotStaging is where a snapshot's own files are gathered: the
// repository bundle, the database dump, the settings (root-only).
func (s *Service) snapshotStaging(appID string) string {
	return filepath.Join(s.o.Layout.Root, "snapshots", appID)
}

// SaveSnapshot saves an app whole into the backup repository: its git
// repository, the active deployment's commit, its data directory, its
// PostgreSQL database (a dump taken while it runs) and its settings.
func (s *Service) SaveSnapshot(ctx context.Context, caller *store.User, domain, name string) (*store.SnapshotRecord, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	if err := s.o.Backups.Init(ctx); err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the backup repository cannot be used: "+err.Error())
	}
	staging := s.snapshotStaging(app.ID)
	os.RemoveAll(staging)
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	meta := snapshotMeta{Version: 1, App: *app, Created: time.Now().UTC()}
	rec := store.SnapshotRecord{AppID: app.ID, Holds: []string{"settings"}}
	if app.ActiveDeployment != "" {
		var dep store.Deployment
		if s.st.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep) }) == nil {
			meta.Deployment = &dep
			rec.Deployment, rec.Commit = dep.ID, dep.Commit
		}
	}
	if _, err := gitrepo.Head(ctx, s.o.Layout.Repo(app.ID), app.Branch); err == nil {
		f, err := os.Create(filepath.Join(staging, "repo.bundle"))
		if err != nil {
			return nil, err
		}
		err = gitrepo.Bundle(ctx, s.o.Layout.Repo(app.ID), f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("bundling the repository: %w", err)
		}
		rec.Holds = append(rec.Holds, "repository")
	}
	for _, c := range app.Cartridges {
		if c.Name != "postgresql" {
			continue // (redis: not yet)
		}
		if err := s.pgDump(ctx, app, c, filepath.Join(staging, "postgresql.sql")); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "the PostgreSQL dump failed; no snapshot was saved: "+err.Error())
		}
		rec.Holds = append(rec.Holds, "postgresql")
	}
	data, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(staging, "app.json"), data, 0o600); err != nil {
		return nil, err
	}
	paths := []string{staging}
	if fi, err := os.Stat(s.o.Layout.Data(app.ID)); err == nil && fi.IsDir() {
		paths = append(paths, s.o.Layout.Data(app.ID))
		rec.Holds = append(rec.Holds, "data")
	}
	// The cartridges' own files are not copied while they run: their
	// dumps are the consistent copy.
	var exclude []string
	for _, c := range cartridgeDirs(app) {
		exclude = append(exclude, filepath.Join(s.o.Layout.Data(app.ID), c))
	}
	snap, err := s.o.Backups.Backup(ctx, []string{"gantry", "app:" + app.ID, "name:" + app.FullName()}, paths, exclude)
	if err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot was not saved: "+err.Error())
	}
	rec.ID, rec.Time, rec.Size, rec.Added = snap.ID, snap.Time, snap.Size, snap.Added
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Put(store.SnapshotKey(app.ID, rec.ID), &rec) }); err != nil {
		return nil, err
	}
	s.record(app, store.Event{Kind: "snapshot", Reason: fmt.Sprintf("%s saved snapshot %s (%s)", caller.Name, rec.ID[:8], strings.Join(rec.Holds, ", "))})
	s.log.Info("snapshot saved", "app", app.FullName(), "snapshot", rec.ID[:8], "user", caller.Name, "added", rec.Added)
	return &rec, nil
}

// pgDump dumps an app's PostgreSQL database (its cartridge, reached at its
// address with its own credentials; the password in the environment).
func (s *Service) pgDump(ctx context.Context, app *store.App, c store.Cartridge, file string) error {
	cmd, err := s.psqlCmd(ctx, app, c, "pg_dump", "--clean", "--if-exists", "--no-owner", "--no-privileges", "-f", file)
	if err != nil {
		return err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (s *Service) psqlCmd(ctx context.Context, app *store.App, c store.Cartridge, tool string, args ...string) (*exec.Cmd, error) {
	ip, port, ok := s.o.Agent.CartridgeAddress(app.Key(), c.Name)
	if !ok {
		return nil, fmt.Errorf("the app's %s is not running: start the app first", c.Name)
	}
	user, db := c.User, c.Database
	if user == "" {
		user = app.Name
	}
	if db == "" {
		db = app.Name
	}
	cmd := exec.CommandContext(ctx, tool, append([]string{"-h", ip, "-p", strconv.Itoa(port), "-U", user, "-d", db}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+c.Password, "PGCONNECT_TIMEOUT=10")
	return cmd, nil
}

// Snapshots lists an app's snapshots, newest first.
func (s *Service) Snapshots(caller *store.User, domain, name string) ([]store.SnapshotRecord, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	var out []store.SnapshotRecord
	err = s.st.View(func(tx *store.Tx) error {
		out, err = store.ListSnapshots(tx, app.ID)
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, err
}

// RestoreSnapshot puts an app back as a snapshot holds it, in place:
// nothing changes until the snapshot is read back and verified; then the
// repository, the database and the settings are restored, the data
// directory is swapped for the snapshot's, and the snapshot's deployment
// rolls out like a deploy (the old gears drain).
func (s *Service) RestoreSnapshot(ctx context.Context, caller *store.User, domain, name, id string) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	snaps, err := s.Snapshots(caller, domain, name)
	if err != nil {
		return nil, err
	}
	var rec *store.SnapshotRecord
	for i := range snaps {
		if id != "" && strings.HasPrefix(snaps[i].ID, id) {
			if rec != nil {
				return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%q names several snapshots: give more of the ID", id))
			}
			rec = &snaps[i]
		}
	}
	if rec == nil {
		return nil, refuse(NotFound, "snapshot_not_found", fmt.Sprintf("%s has no snapshot %q: see `gantry snapshot list %s`", app.Name, id, app.Name))
	}
	// Read back first, beside the data it replaces (the same filesystem,
	// so that the swap is a rename).
	rnd := make([]byte, 4)
	rand.Read(rnd)
	tmp := filepath.Join(s.o.Layout.AppDir(app.ID), "restore-"+hex.EncodeToString(rnd))
	defer os.RemoveAll(tmp)
	if err := s.o.Backups.Restore(ctx, rec.ID, tmp); err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot could not be read back; the app is unchanged: "+err.Error())
	}
	staged := filepath.Join(tmp, s.snapshotStaging(app.ID))
	var meta snapshotMeta
	raw, err := os.ReadFile(filepath.Join(staged, "app.json"))
	if err == nil {
		err = json.Unmarshal(raw, &meta)
	}
	if err != nil || meta.App.ID != app.ID {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot does not hold this app's settings; the app is unchanged")
	}
	if meta.App.Type != app.Type {
		return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("the snapshot is of a %s app and %s is %s: restore it to a new app", orNone(meta.App.Type), app.Name, orNone(app.Type)))
	}
	// The repository: its branches as they were.
	if bundle := filepath.Join(staged, "repo.bundle"); exists(bundle) {
		if err := gitrepo.FetchBundle(ctx, s.o.Layout.Repo(app.ID), bundle, app.Branch, s.o.Exe); err != nil {
			return nil, fmt.Errorf("restoring the repository: %w", err)
		}
	}
	// The database, from its dump (which drops what it recreates).
	for _, c := range app.Cartridges {
		dump := filepath.Join(staged, c.Name+".sql")
		if c.Name != "postgresql" || !exists(dump) {
			continue
		}
		cmd, err := s.psqlCmd(ctx, app, c, "psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", dump)
		if err != nil {
			return nil, err
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("restoring the PostgreSQL database: %v: %s", err, out)
		}
	}
	// The data directory's files (not the cartridges' own, restored from
	// their dumps above): the current ones move to data.before-restore,
	// the snapshot's take their place (renames on one filesystem).
	data := s.o.Layout.Data(app.ID)
	if restored := filepath.Join(tmp, data); exists(restored) {
		if err := swapData(data, restored, cartridgeDirs(app)); err != nil {
			return nil, fmt.Errorf("restoring the data directory: %w", err)
		}
	}
	// The settings (not the credentials: the databases are the same).
	err = s.st.Update(func(tx *store.Tx) error {
		var cur store.App
		if err := tx.Get(app.Key(), &cur); err != nil {
			return err
		}
		m := meta.App
		cur.Env, cur.Formation, cur.StopGrace = m.Env, m.Formation, m.StopGrace
		cur.Scale, cur.MinGears, cur.MaxGears, cur.TargetConns, cur.IdleAfter = m.Scale, m.MinGears, m.MaxGears, m.TargetConns, m.IdleAfter
		cur.Egress, cur.HTTPS, cur.ConnectTimeout, cur.ReadTimeout, cur.TunnelTimeout = m.Egress, m.HTTPS, m.ConnectTimeout, m.ReadTimeout, m.TunnelTimeout
		*app = cur
		return tx.Put(app.Key(), &cur)
	})
	if err != nil {
		return nil, err
	}
	// Its deployment, kept or rebuilt from the restored repository.
	if d := meta.Deployment; d != nil {
		var out bytes.Buffer
		var have store.Deployment
		if s.st.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, d.ID), &have) }) == nil {
			err = s.o.Agent.Rollout(ctx, app.Key(), d.ID, &out)
		} else {
			err = s.o.Builder.Deploy(ctx, app.Key(), d.Commit, nil, &out)
		}
		if err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "restored, but the snapshot's deployment did not start: "+err.Error())
		}
	}
	s.record(app, store.Event{Kind: "restore", Reason: fmt.Sprintf("%s restored snapshot %s of %s", caller.Name, rec.ID[:8], rec.Time.Format(time.RFC3339))})
	s.log.Info("snapshot restored", "app", app.FullName(), "snapshot", rec.ID[:8], "user", caller.Name)
	return s.App(caller, domain, name)
}

// BackupKey is the backup repository's password and location, for
// disaster recovery with stock restic (admins).
func (s *Service) BackupKey(caller *store.User) (location, key string, err error) {
	if !caller.Admin {
		return "", "", refuse(Forbidden, apitypes.CodeForbidden, "only admins see the backup key")
	}
	if s.o.Backups == nil {
		return "", "", refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	k, err := s.o.Backups.Key()
	return s.o.Backups.Location, k, err
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// cartridgeDirs are the names of the data directory's entries that belong
// to the app's cartridges.
func cartridgeDirs(app *store.App) []string {
	var out []string
	for _, c := range app.Cartridges {
		out = append(out, c.Name)
	}
	return out
}

// swapData moves data's entries (but keep's) into data.before-restore and
// restored's into data.
func swapData(data, restored string, keep []string) error {
	before := data + ".before-restore"
	os.RemoveAll(before)
	if err := os.MkdirAll(before, 0o700); err != nil {
		return err
	}
	cur, err := os.ReadDir(data)
	if err != nil {
		return err
	}
	for _, e := range cur {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.Rename(filepath.Join(data, e.Name()), filepath.Join(before, e.Name())); err != nil {
			return err
		}
	}
	snap, err := os.ReadDir(restored)
	if err != nil {
		return err
	}
	for _, e := range snap {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.Rename(filepath.Join(restored, e.Name()), filepath.Join(data, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func orNone(t string) string {
	if t == "" {
		return "pushed-code"
	}
	return t
}
