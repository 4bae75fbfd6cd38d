package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"
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
		func(ctx context.Context, in *restoreIn) (*body[apitypes.RestoreView], error) {
			var res *service.RestoreResult
			var err error
			if in.To != "" {
				res, err = a.o.Service.RestoreSnapshotTo(ctx, userOf(ctx), in.Domain, in.App, in.ID, in.To)
			} else {
				res, err = a.o.Service.RestoreSnapshot(ctx, userOf(ctx), in.Domain, in.App, in.ID)
			}
			if err != nil {
				return nil, asProblem(a, "restoring a snapshot", err)
			}
			return &body[apitypes.RestoreView]{Body: a.restoreView(res)}, nil
		})
	type exportIn struct {
		AppRef
		ID string `path:"id"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "export-snapshot", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/snapshots/{id}/export", Security: bearer,
		Summary:     "Export a snapshot as one portable archive",
		Description: "tar + zstd: snapshot/ (app.json with the settings, repo.bundle, the database dumps) and data/. It holds the app's secrets (env, database passwords, certificate keys): keep it safe. `import-snapshot` reads it on another platform.",
		Tags:        []string{"snapshots"},
		Responses: map[string]*huma.Response{"200": {Description: "the archive", Content: map[string]*huma.MediaType{
			"application/zstd": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}}}},
		func(ctx context.Context, in *exportIn) (*huma.StreamResponse, error) {
			write, err := a.o.Service.ExportSnapshot(ctx, userOf(ctx), in.Domain, in.App, in.ID)
			if err != nil {
				return nil, asProblem(a, "exporting a snapshot", err)
			}
			return &huma.StreamResponse{Body: func(hctx huma.Context) {
				hctx.SetHeader("Content-Type", "application/zstd")
				hctx.SetHeader("Content-Disposition", fmt.Sprintf("attachment; filename=%q", in.App+"-"+in.ID+".tar.zst"))
				if err := write(hctx.BodyWriter()); err != nil {
					a.log.Error("exporting a snapshot", "app", in.Domain+"/"+in.App, "err", err)
				}
			}}, nil
		})
	type importIn struct {
		Domain string `path:"domain"`
		Name   string `query:"name" doc:"the new app's name (default: the archive's)"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "import-snapshot", Method: http.MethodPost, Path: "/v1/domains/{domain}/imports", Security: bearer,
		DefaultStatus: http.StatusCreated, Summary: "Make a new app from an exported snapshot",
		Description: "The request body is an archive from `export-snapshot` (application/zstd). The app gets its own hostname and databases (new credentials), the archive's repository, data, database contents, settings, aliases and TCP routes (checked as when adding them); its deployment's commit is built and started. If any step fails, nothing is left behind.",
		Tags:        []string{"snapshots"}, SkipValidateBody: true,
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{"application/zstd": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}}},
		func(ctx context.Context, in *importIn) (*body[apitypes.RestoreView], error) {
			r, _ := ctx.Value(bodyKey).(io.Reader)
			if r == nil {
				return nil, huma.Error400BadRequest("send the archive as the request body")
			}
			res, err := a.o.Service.ImportSnapshot(ctx, userOf(ctx), in.Domain, in.Name, r)
			if err != nil {
				return nil, asProblem(a, "importing a snapshot", err)
			}
			return &body[apitypes.RestoreView]{Body: a.restoreView(res)}, nil
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
	huma.Register(a.h, huma.Operation{OperationID: "backup-target", Method: http.MethodGet, Path: "/v1/admin/backup/target", Security: bearer,
		Summary: "Where the platform keeps its snapshots (admin)", Description: "With the public key to authorize on an SFTP server.", Tags: []string{"snapshots"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.BackupTargetView], error) {
			t, err := a.o.Service.BackupTarget(userOf(ctx))
			if err != nil {
				return nil, asProblem(a, "reading the backup target", err)
			}
			return &body[apitypes.BackupTargetView]{Body: targetView(t)}, nil
		})
	type targetIn struct {
		Body apitypes.BackupTargetRequest
	}
	huma.Register(a.h, huma.Operation{OperationID: "set-backup-target", Method: http.MethodPut, Path: "/v1/admin/backup/target", Security: bearer,
		Summary:     "Set where the platform keeps its snapshots (admin)",
		Description: "A directory, sftp://USER@HOST[:PORT]/PATH or rest:https://HOST/PATH. The repository is reached and made (or opened) before it replaces the current one; earlier snapshots stay where they were and are restored from there.",
		Tags:        []string{"snapshots"}},
		func(ctx context.Context, in *targetIn) (*body[apitypes.BackupTargetView], error) {
			t, err := a.o.Service.SetBackupTarget(ctx, userOf(ctx), in.Body.Location, in.Body.Key)
			if err != nil {
				return nil, asProblem(a, "setting the backup target", err)
			}
			return &body[apitypes.BackupTargetView]{Body: targetView(t)}, nil
		})
	huma.Register(a.h, huma.Operation{OperationID: "check-backups", Method: http.MethodPost, Path: "/v1/admin/backup/check", Security: bearer,
		Summary: "Check the backup repository, reading all its data back (admin)", Tags: []string{"snapshots"}},
		func(ctx context.Context, _ *struct{}) (*body[apitypes.BackupCheckView], error) {
			var out bytes.Buffer
			err := a.o.Service.CheckBackups(ctx, userOf(ctx), &out)
			var se *service.Error
			if err != nil && !(errors.As(err, &se) && se.Code == "backup_damaged") {
				return nil, asProblem(a, "checking the backups", err)
			}
			v := apitypes.BackupCheckView{OK: err == nil, Output: out.String()}
			if err != nil {
				v.Error = err.Error()
			}
			return &body[apitypes.BackupCheckView]{Body: v}, nil
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

func (a *API) restoreView(r *service.RestoreResult) apitypes.RestoreView {
	return apitypes.RestoreView{App: a.appView(r.App), Notes: append([]string{}, r.Notes...)}
}

func targetView(t *service.BackupTargetInfo) apitypes.BackupTargetView {
	return apitypes.BackupTargetView{Location: t.Location, PublicKey: t.PublicKey, Set: t.Set, By: t.By}
}
