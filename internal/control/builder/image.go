package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// ImageType is the type of a deployment that runs an image.
const ImageType = "image"

// DeployImage deploys an image from a registry (`gantry app deploy APP
// --image REF`): fetched and unpacked on this machine, recorded as a
// deployment, rolled out like a build. login, when set, replaces the
// app's stored registry login. A failure leaves the app as it was.
func (b *Builder) DeployImage(ctx context.Context, appKey, ref string, login *store.RegistryLogin, out io.Writer) (err error) {
	unlock := b.appLock(appKey)
	defer unlock()
	var app store.App
	if err := b.o.Store.View(func(tx *store.Tx) error { return tx.Get(appKey, &app) }); err != nil {
		return fmt.Errorf("the app no longer exists: %w", err)
	}
	if login == nil {
		login = app.Registry
	}
	started := time.Now()
	depID := newDeploymentID()
	dir := b.o.Layout.Deployment(app.ID, depID)
	fmt.Fprintf(out, "-----> Deploying %s (image %s) as deployment %s\n", app.FullName(), ref, depID)
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	img, err := b.o.Deployer.PrepareImage(ctx, appKey, dir, ref, login, out)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	dep := store.Deployment{ID: depID, AppID: app.ID, Commit: img.Digest, Type: ImageType, Command: ref, Dir: dir, Node: b.o.Node,
		Image: &img, Created: time.Now().UTC()}
	err = b.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Create(store.DeploymentKey(app.ID, depID), &dep); err != nil {
			return err
		}
		var cur store.App
		if err := tx.Get(appKey, &cur); err != nil {
			return err
		}
		cur.Registry = login // the login that worked
		return tx.Put(appKey, &cur)
	})
	if err != nil {
		return fmt.Errorf("recording deployment: %w", err)
	}
	port := "$PORT (8080)"
	if img.Port > 0 {
		port = fmt.Sprintf("%d (EXPOSE)", img.Port)
	}
	fmt.Fprintf(out, "-----> Runs %q as uid %d of the image (the app's own user), port %s\n", img.Args(), img.User, port)
	built := time.Now()
	if err := b.o.Deployer.Rollout(ctx, appKey, depID, out); err != nil {
		b.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.DeploymentKey(app.ID, depID)) })
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	fmt.Fprintf(out, "-----> Released in %s (%s in all)\n", time.Since(built).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	b.prune(&app)
	fmt.Fprintf(out, "-----> %s deployed to %s\n", app.FullName(), b.o.URL(&app))
	return nil
}

// deployDockerfile builds a checkout's Dockerfile into an image and rolls
// it out as an image deployment (the caller holds the app's lock and
// removes dir on failure).
func (b *Builder) deployDockerfile(ctx context.Context, app *store.App, depID, commit, dir string, started time.Time, out io.Writer) error {
	fmt.Fprintf(out, "-----> Building the Dockerfile with buildah\n")
	img, err := b.o.Deployer.BuildDockerfile(ctx, app.Key(), dir, dir, "Dockerfile", indent(out))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	dep := store.Deployment{ID: depID, AppID: app.ID, Commit: commit, Type: Dockerfile, Command: "Dockerfile", Dir: dir, Node: b.o.Node,
		Image: &img, Health: HealthPath(dir), Created: time.Now().UTC()}
	if err := b.o.Store.Update(func(tx *store.Tx) error { return tx.Create(store.DeploymentKey(app.ID, depID), &dep) }); err != nil {
		return fmt.Errorf("recording deployment: %w", err)
	}
	fmt.Fprintf(out, "-----> Runs %q as uid %d of the image (the app's own user)\n", img.Args(), img.User)
	built := time.Now()
	fmt.Fprintf(out, "-----> Build finished in %s; starting gears\n", built.Sub(started).Round(time.Millisecond))
	if err := b.o.Deployer.Rollout(ctx, app.Key(), depID, out); err != nil {
		b.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.DeploymentKey(app.ID, depID)) })
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	fmt.Fprintf(out, "-----> Released in %s\n", time.Since(built).Round(time.Millisecond))
	b.prune(app)
	fmt.Fprintf(out, "-----> %s deployed to %s\n", app.FullName(), b.o.URL(app))
	return nil
}
