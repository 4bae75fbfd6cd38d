package service

import (
	"context"
	"fmt"
	"slices"
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
	if s.o.Backups == nil {
		return nil, refuse(Conflict, apitypes.CodeConflict, "this server keeps no backups")
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
	kept, err := s.o.Backups.Forget(ctx, "app:"+app.ID, backup.Keep{Last: k.KeepLast, Daily: k.KeepDaily, Weekly: k.KeepWeekly, Monthly: k.KeepMonthly})
	if err != nil {
		return fmt.Errorf("applying the retention: %w", err)
	}
	return s.st.Update(func(tx *store.Tx) error {
		recs, err := store.ListSnapshots(tx, app.ID)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if !slices.Contains(kept, r.ID) {
				if err := tx.Delete(store.SnapshotKey(app.ID, r.ID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
