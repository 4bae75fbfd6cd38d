package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
)

func snapshotView(r store.SnapshotRecord) apitypes.SnapshotView {
	return apitypes.SnapshotView{ID: r.ID, ShortID: r.ID[:min(8, len(r.ID))], Time: r.Time, Size: r.Size, Added: r.Added, Holds: r.Holds, Deployment: r.Deployment, Commit: r.Commit}
}

func (a *API) registerSnapshots() {
	huma.Register(a.h, huma.Operation{OperationID: "save-snapshot", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/snapshots", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Save a snapshot of an app",
		Description: "Its git repository, active deployment, data directory, PostgreSQL database (a dump taken while it runs) and settings, into the platform's restic repository (deduplicated, encrypted).",
		Tags:        []string{"snapshots"}},
		func(ctx context.Context, in *AppRef) (*body[apitypes.SnapshotView], error) {
			r, err := a.o.Service.SaveSnapshot(ctx, userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "saving a snapshot", err)
			}
			return &body[apitypes.SnapshotView]{Body: snapshotView(*r)}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "list-snapshots", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/snapshots", Security: bearer,
		Summary: "List an app's snapshots", Tags: []string{"snapshots"}},
		func(ctx context.Context, in *AppRef) (*body[[]apitypes.SnapshotView], error) {
			rs, err := a.o.Service.Snapshots(userOf(ctx), in.Domain, in.App)
			if err != nil {
				return nil, asProblem(a, "listing snapshots", err)
			}
			out := []apitypes.SnapshotView{}
			for _, r := range rs {
				out = append(out, snapshotView(r))
			}
			return &body[[]apitypes.SnapshotView]{Body: out}, nil
		})
	type restoreIn struct {
		AppRef
		ID string `path:"id"`
		To string `query:"to" doc:"make a new app of this name (same domain) from the snapshot instead of restoring in place"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "restore-snapshot", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/snapshots/{id}/restore", Security: bearer,
		Summary:     "Restore an app from a snapshot, in place",
		Description: "Nothing changes until the snapshot is read back and verified; then the repository, database, data directory and settings are restored and the snapshot's deployment rolls out like a deploy.",
		Tags:        []string{"snapshots"}},
		func(ctx context.Context, in *restoreIn) (*body[apitypes.AppView], error) {
			restore := a.o.Service.RestoreSnapshot
			if in.To != "" {
				restore = func(ctx context.Context, caller *store.User, domain, name, id string) (*store.App, error) {
					return a.o.Service.RestoreSnapshotTo(ctx, caller, domain, name, id, in.To)
				}
			}
			app, err := restore(ctx, userOf(ctx), in.Domain, in.App, in.ID)
			if err != nil {
				return nil, asProblem(a, "restoring a snapshot", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})
	type scheduleIn struct {
		AppRef
		Body apitypes.BackupScheduleRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "schedule-backups", Method: http.MethodPost, Path: "/v1/domains/{domain}/apps/{app}/backups", Security: bearer,
		Summary: "Set an app's backup schedule and retention", Description: "One machine saves the snapshots on time and forgets (and prunes) those beyond the policy; a failed backup is an app event.",
		Tags: []string{"snapshots"}},
		func(ctx context.Context, in *scheduleIn) (*body[apitypes.AppView], error) {
			app, err := a.o.Service.SetBackupSchedule(userOf(ctx), in.Domain, in.App, in.Body)
			if err != nil {
				return nil, asProblem(a, "setting the backup schedule", err)
			}
			return &body[apitypes.AppView]{Body: a.appView(app)}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "backup-key", Method: http.MethodGet, Path: "/v1/admin/backup/key", Security: bearer,
		Summary: "The backup repository's key (admin)", Description: "With it alone, stock restic restores any snapshot, without Gantry.", Tags: []string{"snapshots"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.BackupKeyView], error) {
			loc, key, err := a.o.Service.BackupKey(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "reading the backup key", err)
			}
			return &body[apitypes.BackupKeyView]{Body: apitypes.BackupKeyView{Repository: loc, Key: key,
				Restore: "restic --repo " + loc + " snapshots --tag name:DOMAIN/APP; restic --repo " + loc + " restore ID --target DIR (the key on stdin or in RESTIC_PASSWORD_FILE)"}}, nil
		})
}
