package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/image"
)

// PrepareImage fetches an image for a deployment of the app and unpacks
// its filesystem into dir/rootfs, owned by the app's user (given one now
// if it has none). Progress goes to out.
func (a *Agent) PrepareImage(ctx context.Context, appKey, dir, ref string, login *store.RegistryLogin, out io.Writer) (store.Image, error) {
	if a.o.Images == nil || !a.rt.Caps().Isolated {
		return store.Image{}, errors.New("images run only in namespaced gears: start the server as root with --isolation namespaces")
	}
	var app store.App
	err := a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		return a.ensureUID(tx, &app)
	})
	if err != nil {
		return store.Image{}, err
	}
	var auth image.Auth
	if login != nil {
		auth = image.Auth{Username: login.Username, Password: login.Password}
	}
	started := time.Now()
	fmt.Fprintf(out, "-----> Fetching %s\n", ref)
	img, _, err := a.o.Images.Fetch(ctx, ref, auth)
	if err != nil {
		return store.Image{}, err
	}
	cfg, err := image.ConfigOf(img, ref)
	if err != nil {
		return store.Image{}, err
	}
	if err := image.Unpack(img, image.Rootfs(dir), app.UID); err != nil {
		return store.Image{}, err
	}
	fmt.Fprintf(out, "-----> %s unpacked in %s (%s)\n", ref, time.Since(started).Round(time.Millisecond), cfg.Digest[:19])
	return cfg, nil
}
