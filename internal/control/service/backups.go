package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/backup"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// MinBackupEvery is the shortest backup interval a user may ask for.
var MinBackupEvery = time.Hour

// SetBackupSchedule saves an app's snapshots every so often and keeps
// some (off: none are saved any more; those there stay).
func (s *Service) SetBackupSchedule(caller *store.User, domain, name string, req apitypes.BackupScheduleRequest) (*store.App, error) {
	app, err := s.App(caller, domain, name)
	if err != nil {
		return nil, err
	}
	if _, err := s.backupTarget(); err != nil {
		return nil, err
	}
	var sched *store.BackupSchedule
	if !req.Off {
		every, err := time.ParseDuration(req.Every)
		min := s.o.MinBackupEvery
		if min == 0 {
			min = MinBackupEvery
		}
		if err != nil || every < min {
			return nil, refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("--every %q is not a duration of at least %s: use e.g. 24h or 6h", req.Every, min))
		}
		for _, n := range []int{req.KeepLast, req.KeepDaily, req.KeepWeekly, req.KeepMonthly} {
			if n < 0 || n > 1000 {
				return nil, refuse(Invalid, apitypes.CodeInvalid, "a --keep-* count is between 0 and 1000")
			}
		}
		if req.KeepLast+req.KeepDaily+req.KeepWeekly+req.KeepMonthly == 0 {
			return nil, refuse(Invalid, apitypes.CodeInvalid, "say which snapshots to keep: e.g. --keep-daily 7 --keep-weekly 4 --keep-monthly 6, or --keep-last 10")
		}
		sched = &store.BackupSchedule{Every: every, KeepLast: req.KeepLast, KeepDaily: req.KeepDaily, KeepWeekly: req.KeepWeekly, KeepMonthly: req.KeepMonthly}
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(app.Key(), app); err != nil {
			return err
		}
		if sched != nil && app.Backups != nil {
			sched.Last = app.Backups.Last // the clock goes on
		}
		app.Backups = sched
		return tx.Put(app.Key(), app)
	})
	if err != nil {
		return nil, fmt.Errorf("saving the backup schedule: %w", err)
	}
	s.log.Info("backup schedule set", "app", app.FullName(), "off", req.Off, "every", req.Every, "user", caller.Name)
	return app, nil
}

// RunBackups saves the apps' scheduled snapshots and applies their
// retention, on the machine that leads role "backups", until ctx ends.
// A failed backup is an event (backup_failed) and stays in the schedule
// as its last error.
func (s *Service) RunBackups(ctx context.Context, self string, tick time.Duration) error {
	if s.o.Backups == nil {
		<-ctx.Done()
		return nil
	}
	return s.st.Lead(ctx, "backups", self, 5*time.Second, func(ctx context.Context) {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.backupDue(ctx)
		}
	})
}

func (s *Service) backupDue(ctx context.Context) {
	var apps []store.App
	s.st.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	})
	for _, a := range apps {
		if a.Backups == nil || time.Since(a.Backups.Last) < a.Backups.Every || ctx.Err() != nil {
			continue
		}
		app := a
		var owner store.User
		err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.UserKey(app.Owner), &owner) })
		var rec *store.SnapshotRecord
		if err == nil {
			rec, err = s.SaveSnapshot(ctx, &owner, app.Domain, app.Name)
		}
		if err == nil {
			err = s.applyRetention(ctx, &app)
		}
		s.st.Update(func(tx *store.Tx) error {
			var cur store.App
			if err := tx.Get(app.Key(), &cur); err != nil || cur.Backups == nil {
				return err
			}
			cur.Backups.Last, cur.Backups.LastError = time.Now().UTC(), ""
			if err != nil {
				cur.Backups.LastError = err.Error()
			}
			return tx.Put(app.Key(), &cur)
		})
		if err != nil {
			s.log.Warn("scheduled backup failed", "app", app.FullName(), "err", err)
			s.record(&app, store.Event{Kind: "backup_failed", Reason: "the scheduled backup failed: " + err.Error()})
			continue
		}
		s.record(&app, store.Event{Kind: "backup", Reason: fmt.Sprintf("scheduled snapshot %s saved", rec.ID[:8])})
	}
}

// applyRetention forgets the app's snapshots beyond its schedule's policy
// (in restic, pruned) and their records.
func (s *Service) applyRetention(ctx context.Context, app *store.App) error {
	k := app.Backups
	r, err := s.repo("")
	if err != nil {
		return err
	}
	kept, err := r.Forget(ctx, "app:"+app.ID, backup.Keep{Last: k.KeepLast, Daily: k.KeepDaily, Weekly: k.KeepWeekly, Monthly: k.KeepMonthly})
	if err != nil {
		return fmt.Errorf("applying the retention: %w", err)
	}
	return s.st.Update(func(tx *store.Tx) error {
		recs, err := store.ListSnapshots(tx, app.ID)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if (rec.Repo == "" || rec.Repo == r.Location) && !slices.ContainsFunc(kept, func(k string) bool { return backup.SameID(k, rec.ID) }) {
				if err := tx.Delete(store.SnapshotKey(app.ID, rec.ID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Backups is a server's backup defaults: the repository used until an
// admin sets a target, the key file of an earlier version (its key is
// kept), where the SSH identity is written for SFTP targets, and the
// largest archive `snapshot import` unpacks.
type Backups struct {
	Location      string
	LegacyKeyFile string
	SSHDir        string
	ImportLimit   int64
}

// backupTarget reads the platform's backup target, making it (the
// default location, a new key and SSH identity) the first time.
func (s *Service) backupTarget() (*store.BackupTarget, error) {
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
	}
	var t store.BackupTarget
	err := s.st.View(func(tx *store.Tx) error { return tx.Get(store.BackupTargetKey(), &t) })
	if err == nil {
		return &t, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	priv, _, err := backup.NewSSHKey()
	if err != nil {
		return nil, err
	}
	t = store.BackupTarget{Location: s.o.Backups.Location, Password: backup.NewPassword(), SSHKey: priv, Set: time.Now().UTC()}
	if b, err := os.ReadFile(s.o.Backups.LegacyKeyFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		t.Password = strings.TrimSpace(string(b)) // its repository stays readable
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(store.BackupTargetKey(), &t); err == nil {
			return nil // made meanwhile (another machine)
		}
		return tx.Create(store.BackupTargetKey(), &t)
	})
	return &t, err
}

// repo is the restic repository at location (the target's when "") with
// the platform's key and SSH identity.
func (s *Service) repo(location string) (*backup.Repo, error) {
	t, err := s.backupTarget()
	if err != nil {
		return nil, err
	}
	if location == "" {
		location = t.Location
	}
	return &backup.Repo{Location: location, Password: t.Password,
		SSH: &backup.SSH{Dir: s.o.Backups.SSHDir, PrivateKey: t.SSHKey, KnownHosts: t.KnownHosts}}, nil
}

// BackupTargetInfo is the platform's backup target as admins see it.
type BackupTargetInfo struct {
	Location  string
	PublicKey string // to authorize on an SFTP server
	Set       time.Time
	By        string
	Key       string // only from BackupKey
}

// checkLocation refuses a location restic cannot use the way Gantry
// drives it, with what to write instead.
func checkLocation(loc string) error {
	switch {
	case filepath.IsAbs(loc) && filepath.Clean(loc) == loc:
		return nil
	case strings.HasPrefix(loc, "sftp:"):
		if _, _, _, ok := backup.SFTPAddress(loc); ok {
			return nil
		}
	case strings.HasPrefix(loc, "rest:http://"), strings.HasPrefix(loc, "rest:https://"):
		return nil
	}
	return refuse(Invalid, apitypes.CodeInvalid, fmt.Sprintf("%q is not a backup target Gantry can use: give an absolute directory (/mnt/backups/gantry), sftp://USER@HOST[:PORT]/PATH or rest:https://HOST/PATH", backup.Redact(loc)))
}

// SetBackupTarget moves the platform's snapshots to another repository
// (admins): it is reached and made (or opened, with key when it was made
// elsewhere) before it replaces the current one. Earlier snapshots stay
// where they were and are restored from there.
func (s *Service) SetBackupTarget(ctx context.Context, caller *store.User, location, key string) (*BackupTargetInfo, error) {
	if !caller.Admin {
		return nil, refuse(Forbidden, apitypes.CodeForbidden, "only admins set the backup target")
	}
	location = strings.TrimSpace(location)
	if err := checkLocation(location); err != nil {
		return nil, err
	}
	cur, err := s.backupTarget()
	if err != nil {
		return nil, err
	}
	unlock := s.snapshots.Lock("the backup target")
	defer unlock()
	r := &backup.Repo{Location: location, Password: cur.Password,
		SSH: &backup.SSH{Dir: s.o.Backups.SSHDir, PrivateKey: cur.SSHKey, KnownHosts: knownHostsFor(cur, location)}}
	if key = strings.TrimSpace(key); key != "" {
		r.Password = key
	}
	// A first contact learns the SFTP server's host key afresh.
	if r.SSH.KnownHosts == "" {
		os.Remove(filepath.Join(s.o.Backups.SSHDir, "known_hosts"))
	}
	if err := r.Init(ctx); err != nil {
		return nil, refuse(Failed, apitypes.CodeDeployFailed, "the backup target was not changed: "+err.Error())
	}
	s.reposReady.Store(location, true)
	if key != "" && key != cur.Password {
		// Snapshots in the old repository need the old key: refuse to
		// lose them silently.
		var n int
		s.st.View(func(tx *store.Tx) error {
			var err error
			n, err = store.CountSnapshots(tx)
			return err
		})
		if n > 0 {
			return nil, refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("the platform has %d snapshots under its current key; a target with another key would make them unreadable here: add the platform's key to that repository (`restic key add`, the key from `gantry admin backup key`) and set the target without --key-stdin", n))
		}
	}
	err = s.st.Update(func(tx *store.Tx) error {
		var t store.BackupTarget
		if err := tx.Get(store.BackupTargetKey(), &t); err != nil {
			return err
		}
		t.Location, t.Password, t.Set, t.By = location, r.Password, time.Now().UTC(), caller.Name
		if strings.HasPrefix(location, "sftp:") {
			t.KnownHosts = r.KnownHosts()
		}
		return tx.Put(store.BackupTargetKey(), &t)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("backup target set", "location", backup.Redact(location), "user", caller.Name)
	return s.BackupTarget(caller)
}

// knownHostsFor keeps the known host key only for the same SFTP server.
func knownHostsFor(t *store.BackupTarget, location string) string {
	_, h1, p1, ok1 := backup.SFTPAddress(t.Location)
	_, h2, p2, ok2 := backup.SFTPAddress(location)
	if ok1 && ok2 && h1 == h2 && p1 == p2 {
		return t.KnownHosts
	}
	return ""
}

// BackupTarget is the platform's backup target (admins).
func (s *Service) BackupTarget(caller *store.User) (*BackupTargetInfo, error) {
	if !caller.Admin {
		return nil, refuse(Forbidden, apitypes.CodeForbidden, "only admins see the backup target")
	}
	t, err := s.backupTarget()
	if err != nil {
		return nil, err
	}
	pub, err := backup.PublicKey(t.SSHKey)
	if err != nil {
		return nil, err
	}
	return &BackupTargetInfo{Location: backup.Redact(t.Location), PublicKey: pub, Set: t.Set, By: t.By}, nil
}

// CheckBackups checks the backup repository's integrity, reading all its
// data back (admins); out gets restic's report.
func (s *Service) CheckBackups(ctx context.Context, caller *store.User, out io.Writer) error {
	if !caller.Admin {
		return refuse(Forbidden, apitypes.CodeForbidden, "only admins check the backup repository")
	}
	r, err := s.repo("")
	if err != nil {
		return err
	}
	if err := r.Check(ctx, out); err != nil {
		return refuse(Failed, "backup_damaged", err.Error())
	}
	return nil
}
