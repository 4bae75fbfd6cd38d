// Command builds measures what issue 16 asks of deploys that build:
// push-to-live of a Node.js app with its npm dependencies (Express: about
// 70 packages from the npm registry), first push and second push (the
// build cache), beside `npm ci` by hand with a cold and a warm cache; and
// for images, a Dockerfile build (buildah, a base image from a registry)
// and the start of a small image, beside a Node.js app's restart.
// Namespaced gears (run as root); it needs the npm registry.
//
//	go run ./bench/builds
package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

const expressApp = `const express = require("express");
const app = express();
app.get("/", (req, res) => res.send("VERSION\n"));
app.listen(process.env.PORT, process.env.IP);
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "builds:", err)
		os.Exit(1)
	}
}

func run() error {
	regAddr, stopReg, err := startRegistry()
	if err != nil {
		return err
	}
	defer stopReg()
	e, err := benchenv.Start("--isolation", "namespaces", "--insecure-registry", regAddr)
	if err != nil {
		return err
	}
	defer e.Close()
	client := e.Client()
	live := func(host, want string, since time.Time) (time.Duration, error) {
		for {
			resp, err := client.Get("http://" + host + "/")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.TrimSpace(string(body)) == want {
					return time.Since(since), nil
				}
			}
			if time.Since(since) > 10*time.Minute {
				return 0, fmt.Errorf("%s never served %q", host, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Node.js with npm dependencies.
	repo, err := e.CreateApp("npm", "")
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(repo, "package.json"), []byte(`{"name":"npm","version":"1.0.0","main":"server.js","dependencies":{"express":"4.21.2"}}`), 0o644)
	if _, err := e.Run(repo, "npm", "install", "--package-lock-only", "--silent"); err != nil {
		return err
	}
	lock, _ := os.ReadFile(filepath.Join(repo, "package-lock.json"))
	packages := strings.Count(string(lock), `"node_modules/`)
	var npmPush [2]time.Duration
	for i := range npmPush {
		version := fmt.Sprintf("npm-v%d", i)
		os.WriteFile(filepath.Join(repo, "server.js"), []byte(strings.Replace(expressApp, "VERSION", version, 1)), 0o644)
		e.Run(repo, "git", "add", "-A")
		if _, err := e.Run(repo, "git", "commit", "-qm", version); err != nil {
			return err
		}
		start := time.Now()
		if _, err := e.Run(repo, "git", "push", "-q"); err != nil {
			return err
		}
		if npmPush[i], err = live("npm-bench.localhost", version, start); err != nil {
			return err
		}
	}
	byHand := func(cache string) (time.Duration, error) {
		dir, _ := os.MkdirTemp("", "npm-by-hand")
		defer os.RemoveAll(dir)
		for _, f := range []string{"package.json", "package-lock.json"} {
			b, _ := os.ReadFile(filepath.Join(repo, f))
			os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		c := exec.Command("npm", "ci", "--silent", "--no-audit", "--no-fund")
		c.Dir, c.Env = dir, append(os.Environ(), "npm_config_cache="+cache)
		start := time.Now()
		out, err := c.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("npm ci: %v\n%s", err, out)
		}
		return time.Since(start), nil
	}
	cache, _ := os.MkdirTemp("", "npm-cache")
	defer os.RemoveAll(cache)
	cold, err := byHand(cache)
	if err != nil {
		return err
	}
	warm, err := byHand(cache)
	if err != nil {
		return err
	}

	// Images: a base image with a shell and the test app.
	base := regAddr + "/bench/base:v1"
	if err := pushBase(base); err != nil {
		return err
	}
	start := time.Now()
	if _, err := e.Gantry("app", "create", "img", "--image", base); err != nil {
		return err
	}
	imgCreate, err := live("img-bench.localhost", "image app base", start)
	if err != nil {
		return err
	}
	restart := func(app string) (time.Duration, error) {
		start := time.Now()
		_, err := e.Gantry("app", "restart", app)
		return time.Since(start), err
	}
	imgRestart, err := restart("img")
	if err != nil {
		return err
	}
	npmRestart, err := restart("npm")
	if err != nil {
		return err
	}
	out, err := e.Gantry("app", "create", "docker", "--json")
	if err != nil {
		return err
	}
	gitURL := between(out, `"git_url": "`, `"`)
	if _, err := e.Run(e.Root, "git", "clone", "-q", gitURL, "docker"); err != nil {
		return err
	}
	drepo := filepath.Join(e.Root, "docker")
	var dockerPush [2]time.Duration
	for i := range dockerPush {
		version := fmt.Sprintf("docker-v%d", i)
		os.WriteFile(filepath.Join(drepo, "Dockerfile"), []byte("FROM "+base+"\nRUN echo built > /built.txt\nENV APP_VERSION="+version+"\nEXPOSE 9000\nENTRYPOINT [\"/app\"]\n"), 0o644)
		e.Run(drepo, "git", "add", "-A")
		if _, err := e.Run(drepo, "git", "commit", "-qm", version); err != nil {
			return err
		}
		start := time.Now()
		if _, err := e.Run(drepo, "git", "push", "-q"); err != nil {
			return err
		}
		if dockerPush[i], err = live("docker-bench.localhost", "image app "+version, start); err != nil {
			return err
		}
	}

	fmt.Printf("builds and images, namespaced gears, one run\n\n")
	fmt.Printf("  Node.js + Express (%d npm packages from the registry)\n", packages)
	fmt.Printf("    first push to live (cold build cache)     %8s\n", npmPush[0].Round(time.Millisecond))
	fmt.Printf("    second push to live (build cache)         %8s   (%.2fx the first)\n", npmPush[1].Round(time.Millisecond), float64(npmPush[1])/float64(npmPush[0]))
	fmt.Printf("    npm ci by hand, cold cache                %8s\n", cold.Round(time.Millisecond))
	fmt.Printf("    npm ci by hand, warm cache                %8s\n", warm.Round(time.Millisecond))
	fmt.Printf("    ratio first push / npm ci cold            %8.2f\n", float64(npmPush[0])/float64(cold))
	fmt.Printf("    ratio second push / npm ci warm           %8.2f\n\n", float64(npmPush[1])/float64(warm))
	fmt.Printf("  Images (a 9 MB static app with busybox)\n")
	fmt.Printf("    app create --image to live (fetch, unpack, start)  %8s\n", imgCreate.Round(time.Millisecond))
	fmt.Printf("    restart of the image app (new gear, switch)        %8s\n", imgRestart.Round(time.Millisecond))
	fmt.Printf("    restart of the Node.js app, for comparison         %8s\n", npmRestart.Round(time.Millisecond))
	fmt.Printf("    Dockerfile push to live, first (base pulled)       %8s\n", dockerPush[0].Round(time.Millisecond))
	fmt.Printf("    Dockerfile push to live, second (base cached)      %8s\n", dockerPush[1].Round(time.Millisecond))
	return nil
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}

// startRegistry runs Debian's docker-registry on a loopback port.
func startRegistry() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	dir, _ := os.MkdirTemp("", "bench-registry")
	conf := filepath.Join(dir, "config.yml")
	os.WriteFile(conf, []byte("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "+dir+"/data\nhttp:\n  addr: "+addr+"\n"), 0o644)
	cmd := exec.Command("docker-registry", "serve", conf)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("docker-registry (scripts/install-deps installs it): %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			stop()
			return "", nil, fmt.Errorf("docker-registry did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, stop, nil
}

// pushBase pushes the e2e tests' image app with busybox as a base image.
func pushBase(ref string) error {
	dir, _ := os.MkdirTemp("", "bench-image")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "app")
	build := exec.Command("go", "build", "-o", bin, "./e2e/testdata/imageapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, src string }{{"app", bin}, {"bin/busybox", "/bin/busybox"}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/app"}
	cf.Config.Env = []string{"PATH=/bin", "APP_VERSION=base"}
	cf.Config.ExposedPorts = map[string]struct{}{"9000/tcp": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}
