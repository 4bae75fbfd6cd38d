package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"
)

// An image from a registry that wants a password (Debian's
// docker-registry in a network namespace): deployed, served with its
// WebSocket through the router, its root user mapped onto the app's
// unprivileged one, a new image deployed with the stored login, and bad
// references, passwords and architectures refused with the app unchanged.
func TestImages(t *testing.T) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Fatal("docker-registry is not installed: run scripts/install-deps")
	}
	isolationArgs(t, "namespaces") // skips unless root

	// The registry's machine.
	ns := peerNamespace(t, "gim", "172.31.89.1/30", "172.31.89.2/30")
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	writeFile(t, filepath.Join(dir, "htpasswd"), "ci:"+string(hash)+"\n", 0o644)
	writeFile(t, filepath.Join(dir, "config.yml"), `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: `+dir+`/data
http:
  addr: 172.31.89.2:5000
auth:
  htpasswd:
    realm: gantry-test
    path: `+dir+`/htpasswd
`, 0o644)
	reg := exec.Command("ip", "netns", "exec", ns, "docker-registry", "serve", filepath.Join(dir, "config.yml"))
	reg.Stdout, reg.Stderr = os.Stderr, os.Stderr
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	host := "172.31.89.2:5000"
	eventually(t, "the registry listens", 15*time.Second, func() error {
		c, err := net.DialTimeout("tcp", host, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})

	// The image: a static binary, run as root by the image.
	bin := filepath.Join(dir, "app")
	build := exec.Command("go", "build", "-o", bin, "./testdata/imageapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image's app: %v\n%s", err, out)
	}
	push := func(tag, version, arch string, extra ...tarEntry) {
		t.Helper()
		img := testImage(t, bin, version, arch, extra...)
		ref, err := name.ParseReference(host+"/team/web:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
	}
	push("v1", "v1", "amd64")
	push("v2", "v2", "amd64")
	push("arm", "v1", "arm64")
	// A base image for Dockerfiles, with a shell (busybox) for RUN.
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal("busybox is not installed: run scripts/install-deps")
	}
	push("base", "base", "amd64", tarEntry{name: "bin/busybox", body: busybox, mode: 0o755}, tarEntry{name: "bin/sh", link: "busybox"})

	srv, u := namespacedUser(t, "--insecure-registry", host)
	hc := srv.httpClient()
	webHost := "web-acme.localhost"

	// Refused: a wrong password, an image that is not there, another
	// architecture. No app is left behind.
	for args, want := range map[string]string{
		"wrong v1":   "refused the credentials",
		"s3cret v9":  "does not exist",
		"s3cret arm": "is built for linux/arm64",
	} {
		pw, tag, _ := strings.Cut(args, " ")
		out, err := u.execIn("", pw+"\n", u.cli(), "app", "create", "web", "--image", host+"/team/web:"+tag, "--registry-username", "ci", "--registry-password-stdin")
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("app create with %s: %v %s; want %q", args, err, out, want)
		}
	}
	if out := u.gantry("app", "list"); strings.Contains(out, "web") {
		t.Fatalf("refused creates left an app:\n%s", out)
	}

	out, err := u.execIn("", "s3cret\n", u.cli(), "app", "create", "web", "--image", host+"/team/web:v1", "--registry-username", "ci", "--registry-password-stdin")
	if err != nil || !strings.Contains(out, "It runs "+host+"/team/web:v1") {
		t.Fatalf("app create --image: %v\n%s", err, out)
	}
	if got := mustGet(t, hc, srv.url(webHost, "/")); got != "image app v1\n" {
		t.Errorf("the image serves %q", got)
	}
	// Root in the image, the app's user on the host; the port it exposes.
	id := mustGet(t, hc, srv.url(webHost, "/id"))
	if !strings.HasPrefix(id, "uid=0 ") || !strings.Contains(id, "port=9000") {
		t.Errorf("inside the gear: %q; want uid 0 and port 9000", id)
	}
	_, after, _ := strings.Cut(id, "hostuid=")
	hostUID, _ := strconv.Atoi(strings.Fields(after + " ?")[0])
	if hostUID < 1000 {
		t.Errorf("the image's root is uid %d on the host (map %q); want an unprivileged uid", hostUID, id)
	}
	if uids := processUIDs(t, "/app"); len(uids) == 0 || uids[0] != hostUID {
		t.Errorf("the image's process runs as host uids %v; want %d", uids, hostUID)
	}
	if got := mustGet(t, hc, srv.url(webHost, "/write")); got != "ok\n" {
		t.Errorf("writing in the image's root: %q", got)
	}
	wsEcho(t, hc, srv.url(webHost, "/ws"), "the router")

	// The next image, with the stored login; then one that does not
	// exist: refused, the app serves on.
	if out := u.gantry("app", "deploy", "web", "--image", host+"/team/web:v2"); !strings.Contains(out, "deployed to") {
		t.Errorf("app deploy --image:\n%s", out)
	}
	if got := mustGet(t, hc, srv.url(webHost, "/")); got != "image app v2\n" {
		t.Errorf("after deploying v2: %q", got)
	}
	if out := u.gantryFails("app", "deploy", "web", "--image", host+"/team/web:v9"); !strings.Contains(out, "does not exist") || !strings.Contains(out, "the app is as it was") {
		t.Errorf("deploying a missing image: %s", out)
	}
	if got := mustGet(t, hc, srv.url(webHost, "/")); got != "image app v2\n" {
		t.Errorf("after a refused deploy: %q", got)
	}
	// Rollback works as for builds.
	var deps []struct{ ID, Commit string }
	u.gantryJSON(&deps, "deployment", "list", "web")
	if len(deps) != 2 {
		t.Fatalf("deployments: %+v", deps)
	}
	u.gantry("deployment", "activate", "web", deps[1].ID)
	if got := mustGet(t, hc, srv.url(webHost, "/")); got != "image app v1\n" {
		t.Errorf("after the rollback: %q", got)
	}

	// A repository with a Dockerfile: built by buildah on push (its base
	// image from the registry with the app's login), served as an image.
	var a appJSON
	u.gantryJSON(&a, "app", "create", "built")
	if out, err := u.execIn("", "s3cret\n", u.cli(), "app", "set", "built", "--registry", host, "--registry-username", "ci", "--registry-password-stdin"); err != nil {
		t.Fatalf("app set --registry: %v\n%s", err, out)
	}
	work := t.TempDir()
	u.runIn(work, "git", "clone", "-q", a.GitURL, "built")
	repo := filepath.Join(work, "built")
	writeFile(t, filepath.Join(repo, "Dockerfile"), "FROM "+host+"/team/web:base\nRUN echo built-by-buildah > /built.txt && id -u >> /built.txt\nENV APP_VERSION=docker\nEXPOSE 9000\nENTRYPOINT [\"/app\"]\n", 0o644)
	u.runIn(repo, "git", "add", "-A")
	u.runIn(repo, "git", "commit", "-qm", "a Dockerfile")
	if out := u.runIn(repo, "git", "push"); !strings.Contains(out, "dockerfile app detected") || !strings.Contains(out, "STEP 2/5: RUN") {
		t.Errorf("push of a Dockerfile:\n%s", out)
	}
	builtHost := "built-acme.localhost"
	if got := mustGet(t, hc, srv.url(builtHost, "/")); got != "image app docker\n" {
		t.Errorf("the Dockerfile's image serves %q", got)
	}
	if got := mustGet(t, hc, srv.url(builtHost, "/cat?path=/built.txt")); got != "built-by-buildah\n0\n" {
		t.Errorf("what its RUN step wrote: %q", got)
	}
	wsEcho(t, hc, srv.url(builtHost, "/ws"), "the router to a Dockerfile app")
	// A Dockerfile that fails: the push is refused, the app serves on.
	writeFile(t, filepath.Join(repo, "Dockerfile"), "FROM "+host+"/team/web:base\nRUN echo broken step; exit 3\n", 0o644)
	u.runIn(repo, "git", "commit", "-qam", "a broken Dockerfile")
	if out, err := u.exec(repo, "git", "push"); err == nil || !strings.Contains(out, "broken step") || !strings.Contains(out, "the Dockerfile build failed") {
		t.Errorf("push of a failing Dockerfile (%v):\n%s", err, out)
	}
	if got := mustGet(t, hc, srv.url(builtHost, "/")); got != "image app docker\n" {
		t.Errorf("after a failed Dockerfile build: %q", got)
	}
}

type tarEntry struct {
	name, link string
	body       []byte
	mode       int64
}

// testImage is an image of the test app binary at /app.
func testImage(t *testing.T, bin, version, arch string, extra ...tarEntry) v1.Image {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "app", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	tw.Write(data)
	for _, d := range []string{"tmp/", "etc/", "bin/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for _, e := range extra {
		if e.link != "" {
			tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeSymlink, Linkname: e.link})
			continue
		}
		tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: e.mode, Size: int64(len(e.body))})
		tw.Write(e.body)
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = []string{"/app"}
	cf.Config.Env = []string{"PATH=/", "APP_VERSION=" + version}
	cf.Config.ExposedPorts = map[string]struct{}{"9000/tcp": {}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// processUIDs lists the real uids of host processes whose command line is
// exactly cmd.
func processUIDs(t *testing.T, cmd string) []int {
	t.Helper()
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || string(bytes.TrimRight(b, "\x00")) != cmd {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				n, _ := strconv.Atoi(f[1])
				out = append(out, n)
			}
		}
	}
	return out
}
