package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/image"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
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

// BuildDockerfile builds the Dockerfile of a checkout (src) with buildah
// and unpacks the image into dest/rootfs, owned by the app's user. Its
// steps run in runc containers (buildah's OCI isolation) in a build
// gear's network namespace (out through NAT, the app's egress policy), as
// root in the container with Docker's default capabilities minus raw
// sockets and device nodes; base images come from registries as the
// image deploys' do (the app's login, --insecure-registry). The build
// streams to out.
func (a *Agent) BuildDockerfile(ctx context.Context, appKey, src, dest, dockerfile string, out io.Writer) (store.Image, error) {
	if a.o.Images == nil || !a.rt.Caps().Isolated {
		return store.Image{}, errors.New("Dockerfile builds run only with namespaced gears: start the server as root with --isolation namespaces")
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		return store.Image{}, errors.New("buildah is not installed on this server: run scripts/install-deps")
	}
	app, g, done, err := a.buildGear(appKey)
	if err != nil {
		return store.Image{}, err
	}
	defer done()
	root := filepath.Join(a.o.Layout.Root, "containers")
	tmp := filepath.Join(root, "tmp")
	for _, d := range []string{root, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return store.Image{}, err
		}
	}
	conf := filepath.Join(root, "registries.conf")
	var rc strings.Builder
	rc.WriteString("unqualified-search-registries = [\"docker.io\"]\n")
	for _, h := range a.o.Images.Insecure {
		fmt.Fprintf(&rc, "\n[[registry]]\nlocation = %q\ninsecure = true\n", h)
	}
	if err := os.WriteFile(conf, []byte(rc.String()), 0o600); err != nil {
		return store.Image{}, err
	}
	tag := "localhost/gantry-" + app.ID + ":" + filepath.Base(dest)
	buildah := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "buildah", append([]string{"--root", filepath.Join(root, "storage"), "--runroot", filepath.Join(a.o.Layout.RunDir(), "containers"),
			"--storage-driver", "vfs", "--registries-conf", conf}, args...)...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		return cmd
	}
	bud := []string{"bud", "--isolation", "oci", "--network", "ns:" + netplan.NetnsPath(a.o.Network.Normalize().NetnsName(g.ID)),
		"--cap-drop", "NET_RAW,MKNOD", "--layers", "-f", dockerfile, "-t", tag}
	if a.o.BuildMemory > 0 { // each RUN step gets the build limit, as build steps do
		bud = append(bud, "--memory", strconv.FormatInt(a.o.BuildMemory, 10), "--memory-swap", strconv.FormatInt(a.o.BuildMemory, 10))
	}
	if app.Registry != nil { // a file, not an argument other users could read
		auth := filepath.Join(tmp, "auth-"+filepath.Base(dest)+".json")
		data, _ := json.Marshal(map[string]any{"auths": map[string]any{app.Registry.Registry: map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte(app.Registry.Username + ":" + app.Registry.Password))}}})
		if err := os.WriteFile(auth, data, 0o600); err != nil {
			return store.Image{}, err
		}
		defer os.Remove(auth)
		bud = append(bud, "--authfile", auth)
	}
	started := time.Now()
	cmd := buildah(append(bud, src)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return store.Image{}, fmt.Errorf("the Dockerfile build was stopped: %w", ctx.Err())
		}
		return store.Image{}, fmt.Errorf("the Dockerfile build failed (%v): see the build output above", err)
	}
	defer buildah("rmi", "-f", tag).Run() // its layers stay cached for the next build
	layoutDir := filepath.Join(tmp, "oci-"+filepath.Base(dest))
	defer os.RemoveAll(layoutDir)
	if out, err := buildah("push", "--quiet", tag, "oci:"+layoutDir+":latest").CombinedOutput(); err != nil {
		return store.Image{}, fmt.Errorf("exporting the built image: %v: %s", err, out)
	}
	img, err := image.FromLayout(layoutDir)
	if err != nil {
		return store.Image{}, err
	}
	cfg, err := image.ConfigOf(img, "Dockerfile")
	if err != nil {
		return store.Image{}, err
	}
	if err := image.Unpack(img, image.Rootfs(dest), app.UID); err != nil {
		return store.Image{}, err
	}
	fmt.Fprintf(out, "-----> Built and unpacked in %s (%s)\n", time.Since(started).Round(time.Millisecond), cfg.Digest[:19])
	return cfg, nil
}
