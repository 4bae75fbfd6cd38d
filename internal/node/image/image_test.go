package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func layer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage has two layers (the second removes a file of the first and
// changes another), a user, one exposed port and an entrypoint.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image,
		layer(t,
			entry{name: "app/", typ: tar.TypeDir, mode: 0o755},
			entry{name: "app/server", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\necho hi\n"},
			entry{name: "app/old.txt", typ: tar.TypeReg, mode: 0o644, body: "old"},
			entry{name: "app/conf.txt", typ: tar.TypeReg, mode: 0o644, body: "v1"},
			entry{name: "app/link", typ: tar.TypeSymlink, link: "server"},
			entry{name: "app/hard", typ: tar.TypeLink, link: "app/server"},
			entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
			entry{name: "../escape.txt", typ: tar.TypeReg, mode: 0o644, body: "x"},
		),
		layer(t,
			entry{name: "app/.wh.old.txt", typ: tar.TypeReg, mode: 0o644},
			entry{name: "app/conf.txt", typ: tar.TypeReg, mode: 0o644, body: "v2"},
		))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/app/server"}
	cf.Config.Cmd = []string{"--port", "8080"}
	cf.Config.User = "1000"
	cf.Config.Env = []string{"PATH=/app:/bin"}
	cf.Config.WorkingDir = "/app"
	cf.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// A registry behind a password, as a real one is.
func startRegistry(t *testing.T) string {
	t.Helper()
	reg := registry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestFetchAndUnpack(t *testing.T) {
	host := startRegistry(t)
	ref := host + "/team/web:1.0"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, testImage(t), remote.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	p := &Puller{Cache: t.TempDir(), Insecure: []string{host}}
	ctx := context.Background()
	if _, _, err := p.Fetch(ctx, ref, Auth{Username: "ci", Password: "wrong"}); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Errorf("wrong password: %v", err)
	}
	if _, _, err := p.Fetch(ctx, host+"/team/nope:1.0", Auth{Username: "ci", Password: "s3cret"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing image: %v", err)
	}
	if _, _, err := p.Fetch(ctx, "Not A Ref", Auth{}); err == nil || !strings.Contains(err.Error(), "not an image reference") {
		t.Errorf("bad reference: %v", err)
	}
	img, _, err := p.Fetch(ctx, ref, Auth{Username: "ci", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigOf(img, ref)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Args(), " ") != "/app/server --port 8080" || cfg.User != 1000 || cfg.Port != 8080 || cfg.WorkDir != "/app" || !strings.HasPrefix(cfg.Digest, "sha256:") {
		t.Errorf("config %+v", cfg)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := Unpack(img, dir, os.Getuid()); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(dir, p)); return string(b) }
	if read("app/conf.txt") != "v2" || read("app/server") == "" || read("app/hard") != read("app/server") {
		t.Errorf("files: conf %q server %q hard %q", read("app/conf.txt"), read("app/server"), read("app/hard"))
	}
	if _, err := os.Stat(filepath.Join(dir, "app/old.txt")); !os.IsNotExist(err) {
		t.Errorf("the whiteout did not remove app/old.txt: %v", err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "app/link")); l != "server" {
		t.Errorf("symlink %q", l)
	}
	fi, _ := os.Stat(filepath.Join(dir, "app/server"))
	if fi == nil || fi.Mode()&os.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("server mode %v; want 0755 without setuid", fi)
	}
	for _, bad := range []string{"dev/null", "../escape.txt"} {
		if _, err := os.Lstat(filepath.Join(dir, bad)); !os.IsNotExist(err) {
			t.Errorf("%s was written: %v", bad, err)
		}
	}
	// A registry on this machine that the admin did not name is not
	// reached (the server is no way into its own ports).
	untrusted := &Puller{}
	if _, _, err := untrusted.Fetch(ctx, ref, Auth{Username: "ci", Password: "s3cret"}); err == nil || !strings.Contains(err.Error(), "not reachable from here") {
		t.Errorf("an unnamed loopback registry: %v", err)
	}
	// Cached layers serve a second fetch.
	entries, _ := os.ReadDir(p.Cache)
	if len(entries) == 0 {
		t.Error("no layer in the cache")
	}
}
