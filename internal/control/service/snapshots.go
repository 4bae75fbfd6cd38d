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
	unlock := s.snapshots.Lock(app.ID)
	defer unlock()
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

// findSnapshot is an app's snapshot named by its ID or a prefix of it.
func (s *Service) findSnapshot(caller *store.User, app *store.App, id string) (*store.SnapshotRecord, error) {
	snaps, err := s.Snapshots(caller, app.Domain, app.Name)
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
	return rec, nil
}

// readSnapshot reads a snapshot of app (source) back, verified, into a
// directory of dest (the app it goes to: the same filesystem as its data
// directory), and returns the directory of its own files, its settings,
// and a function that removes what was read.
func (s *Service) readSnapshot(ctx context.Context, source, dest *store.App, rec *store.SnapshotRecord) (string, snapshotMeta, func(), error) {
	rnd := make([]byte, 4)
	rand.Read(rnd)
	tmp := filepath.Join(s.o.Layout.AppDir(dest.ID), "restore-"+hex.EncodeToString(rnd))
	done := func() { os.RemoveAll(tmp) }
	var meta snapshotMeta
	if err := s.o.Backups.Restore(ctx, rec.ID, tmp); err != nil {
		done()
		return "", meta, nil, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot could not be read back; nothing changed: "+err.Error())
	}
	staged := filepath.Join(tmp, s.snapshotStaging(source.ID))
	raw, err := os.ReadFile(filepath.Join(staged, "app.json"))
	if err == nil {
		err = json.Unmarshal(raw, &meta)
	}
	if err != nil || meta.App.ID != source.ID {
		done()
		return "", meta, nil, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot does not hold this app's settings; nothing changed")
	}
	return tmp, meta, done, nil
}

// putBack restores what a snapshot read back holds (tmp, its settings
// meta, of app source) into app: the repository, the databases, the data
// files, the settings; the caller rolls out or builds the deployment.
func (s *Service) putBack(ctx context.Context, source, app *store.App, tmp string, meta snapshotMeta) error {
	staged := filepath.Join(tmp, s.snapshotStaging(source.ID))
	if bundle := filepath.Join(staged, "repo.bundle"); exists(bundle) {
		if err := gitrepo.FetchBundle(ctx, s.o.Layout.Repo(app.ID), bundle, app.Branch, s.o.Exe); err != nil {
			return fmt.Errorf("restoring the repository: %w", err)
		}
	}
	for _, c := range app.Cartridges {
		dump := filepath.Join(staged, c.Name+".sql")
		if c.Name != "postgresql" || !exists(dump) {
			continue
		}
		cmd, err := s.psqlCmd(ctx, app, c, "psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", dump)
		if err != nil {
			return err
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("restoring the PostgreSQL database: %v: %s", err, out)
		}
	}
	// The data directory's files (not the cartridges' own, restored from
	// their dumps above): the current ones move to data.before-restore,
	// the snapshot's take their place (renames on one filesystem).
	if restored := filepath.Join(tmp, s.o.Layout.Data(source.ID)); exists(restored) {
		if err := swapData(s.o.Layout.Data(app.ID), restored, cartridgeDirs(app)); err != nil {
			return fmt.Errorf("restoring the data directory: %w", err)
		}
	}
	// The settings (not the credentials: the databases are the app's own).
	return s.st.Update(func(tx *store.Tx) error {
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
}

// RestoreSnapshot puts an app back as a snapshot holds it, in place:
// nothing changes until the snapshot is read back and verified; then the
// repository, the database and the settings are restored, the data
// directory's files are swapped for the snapshot's, and the snapshot's
// deployment rolls out like a deploy (the old gears drain).
func (s *Service) RestoreSnapshot(ctx context.Context, caller *store.User, domain, name, id string) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	rec, err := s.findSnapshot(caller, app, id)
	if err != nil {
		return nil, err
	}
	unlock := s.snapshots.Lock(app.ID)
	defer unlock()
	tmp, meta, done, err := s.readSnapshot(ctx, app, app, rec)
	if err != nil {
		return nil, err
	}
	defer done()
	if meta.App.Type != app.Type {
		return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("the snapshot is of a %s app and %s is %s: restore it to a new app with --to", orNone(meta.App.Type), app.Name, orNone(app.Type)))
	}
	if err := s.putBack(ctx, app, app, tmp, meta); err != nil {
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

// RestoreSnapshotTo makes a new app (to, in the same domain) from a
// snapshot of an app: its own name, hostname and databases (with new
// credentials), the snapshot's repository, data, database contents and
// settings, its deployment's commit built and started. If any step
// fails, the new app is removed.
func (s *Service) RestoreSnapshotTo(ctx context.Context, caller *store.User, domain, name, id, to string) (*store.App, error) {
	source, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	rec, err := s.findSnapshot(caller, source, id)
	if err != nil {
		return nil, err
	}
	app, _, err := s.CreateApp(ctx, caller, domain, apitypes.CreateAppRequest{Name: to, Size: source.GearSize})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*store.App, error) {
		s.DeleteApp(context.WithoutCancel(ctx), caller, domain, to)
		return nil, err
	}
	tmp, meta, done, err := s.readSnapshot(ctx, source, app, rec)
	if err != nil {
		return fail(err)
	}
	defer done()
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Type = meta.App.Type
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return fail(err)
	}
	for _, c := range meta.App.Cartridges {
		if app, err = s.AddCartridge(ctx, caller, domain, to, c.Name); err != nil {
			return fail(fmt.Errorf("adding its %s: %w", c.Name, err))
		}
	}
	if err := s.putBack(ctx, source, app, tmp, meta); err != nil {
		return fail(err)
	}
	if d := meta.Deployment; d != nil {
		var out bytes.Buffer
		if err := s.o.Builder.Deploy(ctx, app.Key(), d.Commit, nil, &out); err != nil {
			return fail(refuse(Failed, apitypes.CodeDeployFailed, "the snapshot's deployment did not build in the new app, which was removed: "+err.Error()))
		}
	}
	s.record(app, store.Event{Kind: "restore", Reason: fmt.Sprintf("%s made %s from snapshot %s of %s", caller.Name, to, rec.ID[:8], source.FullName())})
	s.log.Info("snapshot restored to a new app", "app", source.FullName(), "to", to, "snapshot", rec.ID[:8], "user", caller.Name)
	return s.App(caller, domain, to)
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
