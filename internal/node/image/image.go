// Package image fetches OCI and Docker images from registries (with
// go-containerregistry) and unpacks them into a root filesystem that a
// namespaced gear runs: layers applied in order with their whiteouts, no
// path outside the root, no device nodes, no setuid bits, every file owned
// by the app's host user (the image's own user is mapped onto it in the
// gear's user namespace). Layers are cached by digest and shared by every
// app of the machine.
package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/cache"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Auth is a registry login ("" user: anonymous).
type Auth struct {
	Username, Password string
}

// Config is what an image says about running it.
type Config = store.Image

// Puller fetches images.
type Puller struct {
	// Cache is the directory of cached layers (shared by every app).
	Cache string
	// Insecure lists registries (host:port) reached over plain HTTP.
	Insecure []string
	// Transport is the HTTP transport (nil: one that reaches no loopback,
	// link-local, multicast or Forbidden address, except for the
	// Insecure registries the admin named).
	Transport http.RoundTripper
	Forbidden []netip.Prefix
}

// transport is the HTTP transport for a registry: a user names the
// registry, so the server must not become their way into its own
// machine or networks.
func (p *Puller) transport(trusted bool) http.RoundTripper {
	if p.Transport != nil {
		return p.Transport
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	if trusted {
		return t
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		ip := ap.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
			slices.ContainsFunc(p.Forbidden, func(f netip.Prefix) bool { return f.Contains(ip) }) {
			return fmt.Errorf("a registry at %s is not reachable from here (this machine's own or internal addresses): an admin names such a registry with --insecure-registry", ip)
		}
		return nil
	}}
	t.DialContext = d.DialContext
	return t
}

// Fetch reads an image reference from its registry, for this machine's
// platform.
func (p *Puller) Fetch(ctx context.Context, ref string, auth Auth) (v1.Image, name.Reference, error) {
	var opts []name.Option
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("%q is not an image reference: use e.g. registry.example.com/team/app:1.4 (%v)", ref, err)
	}
	trusted := slices.Contains(p.Insecure, r.Context().RegistryStr())
	if trusted {
		opts = append(opts, name.Insecure)
		r, _ = name.ParseReference(ref, opts...)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithTransport(p.transport(trusted))}
	if auth.Username != "" {
		ropts = append(ropts, remote.WithAuth(&authn.Basic{Username: auth.Username, Password: auth.Password}))
	}
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return nil, nil, explain(ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the configuration of %s: %w", ref, err)
	}
	if cf.OS != "" && cf.OS != "linux" || cf.Architecture != "" && cf.Architecture != runtime.GOARCH {
		return nil, nil, fmt.Errorf("%s is built for %s/%s; this machine runs linux/%s: push an image for linux/%s", ref, cf.OS, cf.Architecture, runtime.GOARCH, runtime.GOARCH)
	}
	if p.Cache != "" {
		img = cache.Image(img, cache.NewFilesystemCache(p.Cache))
	}
	return img, r, nil
}

// explain turns registry errors into what to do.
func explain(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("the registry refused the credentials for %s (%d): check --registry-username and the password", ref, te.StatusCode)
		case http.StatusNotFound:
			return fmt.Errorf("%s does not exist in its registry: check the name and the tag", ref)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
				return fmt.Errorf("%s does not exist in its registry: check the name and the tag", ref)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("the registry refused the credentials for %s: check --registry-username and the password", ref)
			}
		}
	}
	if strings.Contains(err.Error(), "no child with platform") {
		return fmt.Errorf("%s has no image for linux/%s", ref, runtime.GOARCH)
	}
	return fmt.Errorf("fetching %s: %w", ref, err)
}

// ConfigOf reads what an image says about running it.
func ConfigOf(img v1.Image, ref string) (Config, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return Config{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return Config{}, err
	}
	c := Config{Ref: ref, Digest: d.String(), Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env, WorkDir: cf.Config.WorkingDir}
	if len(c.Args()) == 0 {
		return Config{}, fmt.Errorf("%s has neither ENTRYPOINT nor CMD: nothing to run", ref)
	}
	if u := cf.Config.User; u != "" {
		uid, _, _ := strings.Cut(u, ":")
		n, err := strconv.Atoi(uid)
		if err != nil {
			return Config{}, fmt.Errorf("%s runs as user %q: only numeric users (USER 1000) can be mapped; use a uid", ref, u)
		}
		c.User = n
	}
	var tcp []int
	for p := range cf.Config.ExposedPorts {
		num, proto, _ := strings.Cut(p, "/")
		if n, err := strconv.Atoi(num); err == nil && (proto == "" || proto == "tcp") {
			tcp = append(tcp, n)
		}
	}
	if len(tcp) == 1 {
		c.Port = tcp[0]
	}
	return c, nil
}

// Unpack writes the image's filesystem (its layers flattened, whiteouts
// applied) into dir, every file owned by uid.
func Unpack(img v1.Image, dir string, uid int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the image's layers: %w", err)
		}
		if err := extract(root, tr, h, uid); err != nil {
			return fmt.Errorf("unpacking %s: %w", h.Name, err)
		}
	}
	return os.Chown(dir, uid, uid)
}

// extract writes one entry beneath root (os.Root refuses a path or link
// that leads out of it).
func extract(root *os.Root, r io.Reader, h *tar.Header, uid int) error {
	p := path.Clean("/" + h.Name)[1:]
	if p == "" {
		return nil
	}
	if dir := path.Dir(p); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	mode := fs.FileMode(h.Mode).Perm() // no setuid, setgid or sticky
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(p, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		root.Chmod(p, mode|0o700)
	case tar.TypeReg:
		root.Remove(p)
		f, err := root.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		root.Remove(p)
		if err := root.Symlink(h.Linkname, p); err != nil {
			return err
		}
	case tar.TypeLink:
		root.Remove(p)
		if err := root.Link(path.Clean("/" + h.Linkname)[1:], p); err != nil {
			return err
		}
	default:
		return nil // devices, FIFOs: not in a gear
	}
	return root.Lchown(p, uid, uid)
}

// Rootfs is where a deployment of an image keeps its filesystem.
// (beside a Dockerfile build's source, under a name no repository uses).
func Rootfs(depDir string) string { return filepath.Join(depDir, ".gantry-rootfs") }

// FromLayout reads the one image of an OCI layout directory (what
// `buildah push IMAGE oci:DIR` writes).
func FromLayout(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the built image: %w", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) == 0 {
		return nil, errors.New("the built image is empty")
	}
	return idx.Image(m.Manifests[0].Digest)
}
