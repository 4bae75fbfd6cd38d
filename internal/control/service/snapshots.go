package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/backup"
	"github.com/gantry-paas/gantry/internal/control/gitrepo"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/failpoint"
)

// snapshotMeta is what a snapshot says of its app (app.json in the
// snapshot, beside repo.bundle, postgresql.sql and redis.rdb).
type snapshotMeta struct {
	Version    int               `json:"version"`
	App        store.App         `json:"app"`
	Deployment *store.Deployment `json:"deployment,omitempty"`
	Aliases    []store.Alias     `json:"aliases,omitempty"`
	Certs      []store.Cert      `json:"certificates,omitempty"`
	TCPRoutes  []store.TCPRoute  `json:"tcp_routes,omitempty"`
	Created    time.Time         `json:"created"`
}

// snapshotVersion is the layout of what a snapshot holds; a newer one is
// refused with a message rather than half read.
const snapshotVersion = 1

// snapshotStaging is where a snapshot's own files are gathered: the
// repository bundle, the database dumps, the settings (root-only).
func (s *Service) snapshotStaging(appID string) string {
	return filepath.Join(s.o.Layout.Root, "snapshots", appID)
}

// restoresDir holds snapshots read back for a restore, an export or an
// import (on the data directories' filesystem, so they move by rename).
func (s *Service) restoresDir() string { return filepath.Join(s.o.Layout.Root, "restores") }

// SaveSnapshot saves an app whole into the backup repository: its git
// repository, the active deployment's commit, its data directory, its
// databases (PostgreSQL: a dump; Redis: its RDB; both taken while they
// run), its settings, aliases with their certificates and TCP routes.
func (s *Service) SaveSnapshot(ctx context.Context, caller *store.User, domain, name string) (*store.SnapshotRecord, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	r, err := s.repo("")
	if err != nil {
		return nil, err
	}
	unlock := s.snapshots.Lock(app.ID)
	defer unlock()
	// A repository made (or found) once is not asked again: opening it
	// costs a key derivation.
	if _, ok := s.reposReady.Load(r.Location); !ok {
		if err := r.Init(ctx); err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, "the backup repository cannot be used; no snapshot was saved: "+err.Error())
		}
		s.reposReady.Store(r.Location, true)
	}
	staging := s.snapshotStaging(app.ID)
	os.RemoveAll(staging) // what a killed save left
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	meta := snapshotMeta{Version: snapshotVersion, App: *app, Created: time.Now().UTC()}
	rec := store.SnapshotRecord{AppID: app.ID, Holds: []string{"settings"}, Repo: r.Location}
	err = s.st.View(func(tx *store.Tx) error {
		if app.ActiveDeployment != "" {
			var dep store.Deployment
			if tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep) == nil {
				meta.Deployment = &dep
				rec.Deployment, rec.Commit = dep.ID, dep.Commit
			}
		}
		als, err := store.ListAliases(tx)
		if err != nil {
			return err
		}
		for _, al := range als {
			if al.AppKey != app.Key() {
				continue
			}
			meta.Aliases = append(meta.Aliases, al)
			var c store.Cert
			if tx.Get(store.CertKey(al.Host), &c) == nil && c.AppKey == app.Key() {
				meta.Certs = append(meta.Certs, c)
			}
		}
		routes, err := store.ListTCPRoutes(tx)
		for _, rt := range routes {
			if rt.AppKey == app.Key() {
				meta.TCPRoutes = append(meta.TCPRoutes, rt)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(meta.Aliases) > 0 {
		rec.Holds = append(rec.Holds, "aliases")
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
		switch c.Name {
		case "postgresql":
			err = s.pgDump(ctx, app, c, filepath.Join(staging, "postgresql.sql"))
		case "redis":
			ip, port, ok := s.o.Agent.CartridgeAddress(app.Key(), c.Name)
			if !ok {
				err = errors.New("the app's redis is not running: start the app first")
			} else {
				err = backup.SaveRedis(ctx, net.JoinHostPort(ip, strconv.Itoa(port)), c.Password, filepath.Join(staging, "redis.rdb"))
			}
		default:
			continue
		}
		if err != nil {
			return nil, refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("copying the app's %s failed; no snapshot was saved: %v", c.Name, err))
		}
		rec.Holds = append(rec.Holds, c.Name)
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
	snap, err := r.Backup(ctx, []string{"gantry", "app:" + app.ID, "name:" + app.FullName()}, paths, exclude)
	if errors.Is(err, backup.ErrNoRepository) {
		s.reposReady.Delete(r.Location) // removed meanwhile: made again next time
	}
	if err != nil {
		s.record(app, store.Event{Kind: "snapshot_failed", Reason: "a snapshot was not saved: " + err.Error()})
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

// appSnapshot is one of the caller's apps and one of its snapshots.
func (s *Service) appSnapshot(caller *store.User, domain, name, id string) (*store.App, *store.SnapshotRecord, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, nil, err
	}
	rec, err := s.findSnapshot(caller, app, id)
	return app, rec, err
}

// findSnapshot is an app's snapshot named by its ID or a prefix of it.
func (s *Service) findSnapshot(caller *store.User, app *store.App, id string) (*store.SnapshotRecord, error) {
	snaps, err := s.Snapshots(caller, app.Domain, app.Name)
	if err != nil {
		return nil, err
	}
	var rec *store.SnapshotRecord
	for i := range snaps {
		if len(id) >= 4 && (strings.HasPrefix(snaps[i].ID, id) || backup.SameID(snaps[i].ID, id)) {
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

// readBack reads a snapshot of app source back from its repository,
// verified, into a new directory under under: snapshot/ (its own files:
// app.json, repo.bundle, the dumps) and data/ (the data directory). The
// caller removes the directory.
func (s *Service) readBack(ctx context.Context, source *store.App, rec *store.SnapshotRecord, under string) (string, snapshotMeta, error) {
	var meta snapshotMeta
	r, err := s.repo(rec.Repo)
	if err != nil {
		return "", meta, err
	}
	dir, err := scratch(under)
	if err != nil {
		return "", meta, err
	}
	raw := filepath.Join(dir, "raw")
	if err := r.Restore(ctx, rec.ID, raw); err != nil {
		os.RemoveAll(dir)
		return "", meta, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot could not be read back; nothing changed: "+err.Error())
	}
	err = os.Rename(filepath.Join(raw, s.snapshotStaging(source.ID)), filepath.Join(dir, "snapshot"))
	if err == nil {
		if d := filepath.Join(raw, s.o.Layout.Data(source.ID)); exists(d) {
			err = os.Rename(d, filepath.Join(dir, "data"))
		}
	}
	os.RemoveAll(raw)
	if err == nil {
		meta, err = loadMeta(dir)
	}
	if err == nil && meta.App.ID != source.ID {
		err = errors.New("it holds another app")
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", meta, refuse(Failed, apitypes.CodeDeployFailed, "the snapshot does not hold this app as Gantry saves it; nothing changed: "+err.Error())
	}
	return dir, meta, nil
}

// scratch makes a new root-only directory under dir.
func scratch(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	return os.MkdirTemp(dir, scratchPrefix)
}

// scratchPrefix names what a restore, export or import reads back.
const scratchPrefix = "restore-"

// loadMeta reads the settings of a snapshot read back into dir.
func loadMeta(dir string) (snapshotMeta, error) {
	var meta snapshotMeta
	raw, err := os.ReadFile(filepath.Join(dir, "snapshot", "app.json"))
	if err != nil {
		return meta, errors.New("it has no snapshot/app.json")
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return meta, fmt.Errorf("its app.json does not read: %w", err)
	}
	if meta.Version < 1 || meta.Version > snapshotVersion {
		return meta, fmt.Errorf("it is of snapshot version %d; this server reads up to %d: upgrade Gantry", meta.Version, snapshotVersion)
	}
	if meta.App.Name == "" {
		return meta, errors.New("its app.json names no app")
	}
	return meta, nil
}

// RestoreResult is a restored app and what the caller should know (an
// alias now another app's, a TCP port taken…).
type RestoreResult struct {
	App   *store.App
	Notes []string
}

// RestoreSnapshot puts an app back as a snapshot holds it, in place:
// nothing changes until the snapshot is read back and verified; then a
// journal is written, the repository, databases and settings are
// restored, the data directory's files are swapped for the snapshot's,
// and the snapshot's deployment rolls out like a deploy (the old gears
// drain). A server killed on the way finishes the restore when it starts.
func (s *Service) RestoreSnapshot(ctx context.Context, caller *store.User, domain, name, id string) (*RestoreResult, error) {
	app, rec, err := s.appSnapshot(caller, domain, name, id)
	if err != nil {
		return nil, err
	}
	unlock := s.snapshots.Lock(app.ID)
	defer unlock()
	// Read back beside the app's data when its disk has room for the
	// snapshot as well (its files then move in by rename), else on the
	// server's disk (they are copied in after the app's are removed).
	under := s.restoresDir()
	if free(s.o.Layout.AppDir(app.ID)) > rec.Size+64<<20 {
		under = s.o.Layout.AppDir(app.ID)
	}
	dir, meta, err := s.readBack(ctx, app, rec, under)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if meta.App.Type != app.Type {
		return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("the snapshot is of a %s app and %s is %s: restore it to a new app with --to", orNone(meta.App.Type), app.Name, orNone(app.Type)))
	}
	if under == s.restoresDir() {
		if err := s.dataFits(app, dir); err != nil {
			return nil, err
		}
	}
	j := &store.RestoreJournal{AppID: app.ID, AppKey: app.Key(), Snapshot: rec.ID, Dir: dir, Node: s.o.Self, User: caller.Name, Started: time.Now().UTC()}
	if err := s.st.Update(func(tx *store.Tx) error { return tx.Put(store.RestoreKey(app.ID), j) }); err != nil {
		return nil, err
	}
	notes, err := s.putBack(ctx, caller, j, app, meta)
	if err != nil {
		// The journal stays: the next start of this server retries.
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the restore did not finish ("+err.Error()+"); the server finishes it when it starts again, or run the restore again")
	}
	s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.RestoreKey(app.ID)) })
	s.record(app, store.Event{Kind: "restore", Reason: fmt.Sprintf("%s restored snapshot %s of %s", caller.Name, rec.ID[:8], rec.Time.Format(time.RFC3339))})
	s.log.Info("snapshot restored", "app", app.FullName(), "snapshot", rec.ID[:8], "user", caller.Name)
	app, err = s.App(caller, domain, name)
	return &RestoreResult{App: app, Notes: notes}, err
}

// putBack restores what was read back (j.Dir: snapshot/, data/) into
// app, each step such that doing it again is harmless: the repository
// (a fetch), the databases (PostgreSQL in one transaction, Redis in one
// MULTI), the data directory (two phases recorded in the journal), the
// settings, aliases, certificates and TCP routes, then its deployment.
func (s *Service) putBack(ctx context.Context, caller *store.User, j *store.RestoreJournal, app *store.App, meta snapshotMeta) ([]string, error) {
	staged := filepath.Join(j.Dir, "snapshot")
	if bundle := filepath.Join(staged, "repo.bundle"); exists(bundle) {
		if err := gitrepo.FetchBundle(ctx, s.o.Layout.Repo(app.ID), bundle, app.Branch, s.o.Exe); err != nil {
			return nil, fmt.Errorf("restoring the repository: %w", err)
		}
	}
	for _, c := range app.Cartridges {
		switch c.Name {
		case "postgresql":
			dump := filepath.Join(staged, "postgresql.sql")
			if !exists(dump) {
				continue
			}
			cmd, err := s.psqlCmd(ctx, app, c, "psql", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", dump)
			if err != nil {
				return nil, err
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("restoring the PostgreSQL database: %v: %s", err, out)
			}
		case "redis":
			rdb := filepath.Join(staged, "redis.rdb")
			if !exists(rdb) {
				continue
			}
			ip, port, ok := s.o.Agent.CartridgeAddress(app.Key(), c.Name)
			if !ok {
				return nil, errors.New("the app's redis is not running")
			}
			if err := backup.LoadRedis(ctx, rdb, net.JoinHostPort(ip, strconv.Itoa(port)), c.Password); err != nil {
				return nil, fmt.Errorf("restoring Redis: %w", err)
			}
		}
	}
	failpoint.Hit("restore-after-databases")
	if err := s.swapData(j, app); err != nil {
		return nil, fmt.Errorf("restoring the data directory: %w", err)
	}
	failpoint.Hit("restore-after-data")
	// The settings (not the credentials: the databases are the app's own).
	err := s.st.Update(func(tx *store.Tx) error {
		var cur store.App
		if err := tx.Get(app.Key(), &cur); err != nil {
			return err
		}
		m := meta.App
		cur.Env, cur.Formation, cur.StopGrace = m.Env, m.Formation, m.StopGrace
		cur.Scale, cur.MinGears, cur.MaxGears, cur.TargetConns, cur.IdleAfter = m.Scale, m.MinGears, m.MaxGears, m.TargetConns, m.IdleAfter
		cur.Egress, cur.HTTPS, cur.ConnectTimeout, cur.ReadTimeout, cur.TunnelTimeout = m.Egress, m.HTTPS, m.ConnectTimeout, m.ReadTimeout, m.TunnelTimeout
		if cur.Type == "" {
			cur.Type = m.Type
		}
		*app = cur
		return tx.Put(app.Key(), &cur)
	})
	if err != nil {
		return nil, err
	}
	notes := s.putBackRoutes(ctx, caller, app, meta)
	// Its deployment: kept here, or built from the restored repository.
	if d := meta.Deployment; d != nil {
		var out bytes.Buffer
		var have store.Deployment
		if !j.NewApp && s.st.View(func(tx *store.Tx) error { return tx.Get(store.DeploymentKey(app.ID, d.ID), &have) }) == nil {
			err = s.o.Agent.Rollout(ctx, app.Key(), d.ID, &out)
		} else {
			err = s.o.Builder.Deploy(ctx, app.Key(), d.Commit, nil, &out)
		}
		if err != nil {
			return nil, fmt.Errorf("the snapshot's deployment did not start: %w", err)
		}
	}
	return notes, nil
}

// putBackRoutes gives the app the snapshot's aliases, uploaded
// certificates and TCP routes it does not have, through the same checks
// as a user adding them (a name another user holds, an unclaimed name,
// a taken port are refused and noted).
func (s *Service) putBackRoutes(ctx context.Context, caller *store.User, app *store.App, meta snapshotMeta) []string {
	var notes []string
	var mine map[string]bool
	s.st.View(func(tx *store.Tx) error {
		mine = map[string]bool{}
		als, _ := store.ListAliases(tx)
		for _, al := range als {
			if al.AppKey == app.Key() {
				mine[al.Host] = true
			}
		}
		return nil
	})
	for _, al := range meta.Aliases {
		if mine[al.Host] {
			continue
		}
		if _, _, err := s.AddAlias(ctx, caller, app.Domain, app.Name, al.Host); err != nil {
			notes = append(notes, fmt.Sprintf("alias %s not restored: %v", al.Host, err))
			continue
		}
		mine[al.Host] = true
	}
	for _, c := range meta.Certs {
		if c.Source != "upload" || !mine[c.Host] {
			continue // ACME certificates are issued again for the alias
		}
		var cur store.Cert
		if s.st.View(func(tx *store.Tx) error { return tx.Get(store.CertKey(c.Host), &cur) }) == nil && cur.AppKey == app.Key() && !cur.NotAfter.Before(c.NotAfter) {
			continue // the one it has lasts as long
		}
		if _, _, _, err := s.UploadCert(ctx, caller, app.Domain, app.Name, c.Host, apitypes.CertUpload{Certificate: c.CertPEM, PrivateKey: c.KeyPEM, Force: c.Forced}); err != nil {
			notes = append(notes, fmt.Sprintf("the certificate of %s not restored: %v", c.Host, err))
		}
	}
	for _, rt := range meta.TCPRoutes {
		var cur store.TCPRoute
		if s.st.View(func(tx *store.Tx) error { return tx.Get(rt.Key(), &cur) }) == nil && cur.AppKey == app.Key() {
			continue
		}
		if _, err := s.AddTCPRoute(ctx, caller, app.Domain, app.Name, apitypes.TCPRouteRequest{Port: rt.Port, SNI: rt.SNI, TargetPort: rt.TargetPort}); err != nil {
			notes = append(notes, fmt.Sprintf("TCP route %s not restored: %v", rt.ID(), err))
		}
	}
	return notes
}

// RestoreSnapshotTo makes a new app (to, in the same domain) from a
// snapshot of an app: its own name, hostname and databases (with new
// credentials), the snapshot's repository, data, database contents and
// settings, its deployment's commit built and started. The aliases and
// TCP routes stay the source's. If any step fails, the new app is removed.
func (s *Service) RestoreSnapshotTo(ctx context.Context, caller *store.User, domain, name, id, to string) (*RestoreResult, error) {
	source, rec, err := s.appSnapshot(caller, domain, name, id)
	if err != nil {
		return nil, err
	}
	dir, meta, err := s.readBack(ctx, source, rec, s.restoresDir())
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	meta.Aliases, meta.Certs, meta.TCPRoutes = nil, nil, nil
	res, err := s.newAppFrom(ctx, caller, domain, to, dir, meta, rec.ID)
	if err != nil {
		return nil, err
	}
	s.record(res.App, store.Event{Kind: "restore", Reason: fmt.Sprintf("%s made %s from snapshot %s of %s", caller.Name, to, rec.ID[:8], source.FullName())})
	s.log.Info("snapshot restored to a new app", "app", source.FullName(), "to", to, "snapshot", rec.ID[:8], "user", caller.Name)
	return res, nil
}

// newAppFrom makes app to from a snapshot read back into dir. A journal
// marks it half made until it serves: a failure, or a server killed on
// the way, removes it.
func (s *Service) newAppFrom(ctx context.Context, caller *store.User, domain, to, dir string, meta snapshotMeta, snapID string) (*RestoreResult, error) {
	if meta.App.Type != "" && meta.Deployment == nil {
		meta.App.Type = "" // nothing was deployed: a bare app takes the push
	}
	app, _, err := s.CreateApp(ctx, caller, domain, apitypes.CreateAppRequest{Name: to, Size: meta.App.GearSize})
	if err != nil {
		return nil, err
	}
	j := &store.RestoreJournal{AppID: app.ID, AppKey: app.Key(), Snapshot: snapID, NewApp: true, Dir: dir, Node: s.o.Self, User: caller.Name, Started: time.Now().UTC()}
	fail := func(err error) (*RestoreResult, error) {
		s.DeleteApp(context.WithoutCancel(ctx), caller, domain, to)
		s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.RestoreKey(app.ID)) })
		return nil, err
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		app.Type = meta.App.Type
		if err := tx.Put(store.RestoreKey(app.ID), j); err != nil {
			return err
		}
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
	if err := s.dataFits(app, dir); err != nil {
		return fail(err)
	}
	notes, err := s.putBack(ctx, caller, j, app, meta)
	if err != nil {
		return fail(refuse(Failed, apitypes.CodeDeployFailed, "the new app did not come up from the snapshot and was removed: "+err.Error()))
	}
	s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.RestoreKey(app.ID)) })
	app, err = s.App(caller, domain, to)
	return &RestoreResult{App: app, Notes: notes}, err
}

// ExportSnapshot writes a snapshot of an app as one portable archive
// (tar + zstd: snapshot/ and data/) to w, once it is read back verified.
// It holds the app's secrets (env, database passwords, certificate keys)
// as they are: the caller is told to keep it safe.
func (s *Service) ExportSnapshot(ctx context.Context, caller *store.User, domain, name, id string) (func(w io.Writer) error, error) {
	app, rec, err := s.appSnapshot(caller, domain, name, id)
	if err != nil {
		return nil, err
	}
	dir, _, err := s.readBack(ctx, app, rec, s.restoresDir())
	if err != nil {
		return nil, err
	}
	return func(w io.Writer) error {
		defer os.RemoveAll(dir)
		err := backup.WriteArchive(w, dir)
		if err == nil {
			s.log.Info("snapshot exported", "app", app.FullName(), "snapshot", rec.ID[:8], "user", caller.Name)
		}
		return err
	}, nil
}

// ImportSnapshot makes a new app (to, or the archive's app name) in a
// domain of the caller's from an exported snapshot archive: its own
// hostname and databases, the archive's repository, data, database
// contents, settings, aliases and TCP routes (through the same checks as
// adding them), its deployment's commit built and started.
func (s *Service) ImportSnapshot(ctx context.Context, caller *store.User, domain, to string, r io.Reader) (*RestoreResult, error) {
	if _, err := s.backupTarget(); err != nil {
		return nil, err
	}
	if err := s.canCreateIn(caller, domain); err != nil {
		return nil, err
	}
	dir, err := scratch(s.restoresDir())
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	unpacked := filepath.Join(dir, "in")
	if err := backup.ReadArchive(r, unpacked, s.o.Backups.ImportLimit); err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, err.Error()+"; nothing was made")
	}
	meta, err := loadMeta(unpacked)
	if err != nil {
		return nil, refuse(Invalid, apitypes.CodeInvalid, "the archive is not a Gantry snapshot: "+err.Error()+"; nothing was made")
	}
	if to == "" {
		to = meta.App.Name
	}
	res, err := s.newAppFrom(ctx, caller, domain, to, unpacked, meta, "import")
	if err != nil {
		return nil, err
	}
	s.record(res.App, store.Event{Kind: "restore", Reason: fmt.Sprintf("%s imported %s from an archive of %s", caller.Name, to, meta.App.FullName())})
	s.log.Info("snapshot imported", "app", res.App.FullName(), "from", meta.App.FullName(), "user", caller.Name)
	return res, nil
}

// ResumeRestores finishes the restores this server was doing when it
// stopped (a kill -9): an in-place restore is done again from what was
// read back (every step may be repeated); a new app half made is removed.
// Directories read back for no journal are removed.
func (s *Service) ResumeRestores(ctx context.Context) {
	if s.o.Backups == nil {
		return
	}
	var js []store.RestoreJournal
	s.st.View(func(tx *store.Tx) error {
		var err error
		js, err = store.ListRestores(tx)
		return err
	})
	live := map[string]bool{}
	for _, j := range js {
		if j.Node != s.o.Self {
			continue
		}
		live[filepath.Base(j.Dir)] = true
		s.resume(ctx, j)
	}
	left, _ := filepath.Glob(filepath.Join(s.restoresDir(), scratchPrefix+"*"))
	inApps, _ := filepath.Glob(filepath.Join(s.o.Layout.AppDir("*"), scratchPrefix+"*"))
	for _, d := range append(left, inApps...) {
		if !live[filepath.Base(d)] {
			os.RemoveAll(d)
		}
	}
}

func (s *Service) resume(ctx context.Context, j store.RestoreJournal) {
	var user store.User
	var app store.App
	err := s.st.View(func(tx *store.Tx) error {
		if err := tx.Get(store.UserKey(j.User), &user); err != nil {
			return err
		}
		return tx.Get(j.AppKey, &app)
	})
	done := func() {
		s.st.Update(func(tx *store.Tx) error { return tx.Delete(store.RestoreKey(j.AppID)) })
		os.RemoveAll(j.Dir)
	}
	if err != nil {
		s.log.Warn("a restore under way when the server stopped is gone with its app", "app", store.AppName(j.AppKey), "err", err)
		done()
		return
	}
	if j.NewApp {
		s.log.Warn("removing an app half made from a snapshot when the server stopped", "app", app.FullName())
		if err := s.DeleteApp(ctx, &user, app.Domain, app.Name); err != nil {
			s.log.Error("removing a half-made app", "app", app.FullName(), "err", err)
			return
		}
		done()
		return
	}
	meta, err := loadMeta(j.Dir)
	if err != nil {
		s.log.Error("a restore under way cannot be finished: what was read back is gone; the app is as the restore left it", "app", app.FullName(), "err", err)
		s.record(&app, store.Event{Kind: "restore_failed", Reason: "the restore under way when the server stopped could not be finished: " + err.Error()})
		done()
		return
	}
	s.log.Info("finishing a restore under way when the server stopped", "app", app.FullName(), "snapshot", j.Snapshot[:min(8, len(j.Snapshot))])
	unlock := s.snapshots.Lock(app.ID)
	defer unlock()
	if _, err := s.putBack(ctx, &user, &j, &app, meta); err != nil {
		s.log.Error("finishing a restore", "app", app.FullName(), "err", err)
		s.record(&app, store.Event{Kind: "restore_failed", Reason: "finishing the restore under way when the server stopped: " + err.Error()})
		return // the journal stays: the next start tries again
	}
	s.record(&app, store.Event{Kind: "restore", Reason: fmt.Sprintf("the restore of snapshot %s under way when the server stopped was finished", j.Snapshot[:min(8, len(j.Snapshot))])})
	done()
}

// BackupKey is the backup repository's password and location, for
// disaster recovery with stock restic (admins).
func (s *Service) BackupKey(caller *store.User) (location, key string, err error) {
	if !caller.Admin {
		return "", "", refuse(Forbidden, apitypes.CodeForbidden, "only admins see the backup key")
	}
	t, err := s.backupTarget()
	if err != nil {
		return "", "", err
	}
	return backup.Redact(t.Location), t.Password, nil
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

// dataFits refuses a snapshot whose data files (read back into dir) do
// not fit the app's data filesystem (its disk limit) once the app's
// current files are gone, before anything changes.
func (s *Service) dataFits(app *store.App, dir string) error {
	data := s.o.Layout.Data(app.ID)
	if !exists(data) {
		return nil // no data directory yet: the app's first files
	}
	need := treeSize(filepath.Join(dir, "data"), cartridgeDirs(app))
	room := free(data) + treeSize(data, cartridgeDirs(app))
	if need > room {
		return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("the snapshot's data files (%d MiB) do not fit %s's disk (%d MiB free once its current files are gone): give it a larger gear size (gantry app set %s --gear-size large) or restore to a new app with --to; nothing changed", need>>20, app.Name, room>>20, app.Name))
	}
	return nil
}

// free is the bytes free to root's use on dir's filesystem.
func free(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// treeSize is the bytes of the regular files under dir, but for the top
// entries named in skip.
func treeSize(dir string, skip []string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && filepath.Dir(p) == dir && slices.Contains(skip, d.Name()) {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// swapData puts the snapshot's data files (j.Dir/data) in place of the
// app's (not the cartridges' own, restored from their dumps), in two
// phases the journal records: the current files are removed (what was
// read back is the state the restore goes to, whatever happens next),
// then the snapshot's move in (by rename, or a copy across filesystems)
// and become the app's. Each phase may be done again after a crash.
func (s *Service) swapData(j *store.RestoreJournal, app *store.App) error {
	restored := filepath.Join(j.Dir, "data")
	if !exists(restored) {
		return nil
	}
	data := s.o.Layout.Data(app.ID)
	keep := cartridgeDirs(app)
	step := func(name string) error {
		j.Step = name
		return s.st.Update(func(tx *store.Tx) error { return tx.Put(store.RestoreKey(j.AppID), j) })
	}
	if j.Step == "" {
		if err := step("clearing"); err != nil {
			return err
		}
	}
	if j.Step == "clearing" {
		cur, err := os.ReadDir(data)
		if err != nil {
			return err
		}
		for _, e := range cur {
			if slices.Contains(keep, e.Name()) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(data, e.Name())); err != nil {
				return err
			}
		}
		if err := step("moving-in"); err != nil {
			return err
		}
	}
	fi, err := os.Stat(data)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	snap, err := os.ReadDir(restored)
	if err != nil {
		return err
	}
	for _, e := range snap {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		p := filepath.Join(restored, e.Name())
		// The app's own user owns them (a new app has another one).
		err := filepath.WalkDir(p, func(q string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(q, int(st.Uid), int(st.Gid))
		})
		if err != nil {
			return err
		}
		if err := move(p, filepath.Join(data, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// move renames src to dst, or copies it across filesystems (an app's
// data may be a filesystem of its own) and then removes it; a copy cut
// short is done again from the start.
func move(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", "--", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %v: %s", filepath.Base(src), err, out)
	}
	return os.RemoveAll(src)
}

func orNone(t string) string {
	if t == "" {
		return "pushed-code"
	}
	return t
}

// canCreateIn refuses a domain that is not the caller's before work
// begins (CreateApp checks it again in its transaction).
func (s *Service) canCreateIn(caller *store.User, domain string) error {
	var d store.Domain
	if err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.DomainKey(domain), &d) }); err != nil || d.Owner != caller.Name {
		return refuse(NotFound, "domain_not_found", fmt.Sprintf("you have no domain %q: create it with `gantry domain create %s`", domain, domain))
	}
	return nil
}
