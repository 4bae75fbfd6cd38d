package runtimes

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// FetchGo gets a toolchain module from the module proxy (here a file://
// proxy with a fake toolchain whose go reports its version) into the
// runtimes directory, with its programs executable, and Discover then
// offers it.
func TestFetchGo(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH: FetchGo runs the host's go to download, and CI (which builds Gantry with go) has it")
	}
	proxy := t.TempDir()
	mod := "v0.0.1-go1.99.1." + runtime.GOOS + "-" + runtime.GOARCH
	dir := filepath.Join(proxy, "golang.org", "toolchain", "@v")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, mod+".info"), []byte(`{"Version":"`+mod+`"}`), 0o644)
	os.WriteFile(filepath.Join(dir, mod+".mod"), []byte("module golang.org/toolchain\n"), 0o644)
	f, _ := os.Create(filepath.Join(dir, mod+".zip"))
	zw := zip.NewWriter(f)
	for name, body := range map[string]string{
		"bin/go":                  "#!/bin/sh\necho go version go1.99.1 " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
		"pkg/tool/x/compile":      "#!/bin/sh\n",
		"src/runtime/extern.go":   "package runtime\n",
		"lib/time/zoneinfo.zip.x": "z",
	} {
		w, _ := zw.Create("golang.org/toolchain@" + mod + "/" + name)
		w.Write([]byte(body))
	}
	zw.Close()
	f.Close()
	home := t.TempDir()
	env := append(os.Environ(), "GOPROXY=file://"+proxy, "GOSUMDB=off", "HOME="+home, "GOPATH="+filepath.Join(home, "go"), "GOCACHE="+filepath.Join(home, "cache"))
	rts := t.TempDir()
	tree, err := FetchGo(context.Background(), rts, "1.99.1", env)
	if err != nil {
		t.Fatal(err)
	}
	if tree != filepath.Join(rts, "go-1.99.1") {
		t.Errorf("tree %s", tree)
	}
	for p, exe := range map[string]bool{"bin/go": true, "pkg/tool/x/compile": true, "src/runtime/extern.go": false} {
		fi, err := os.Stat(filepath.Join(tree, p))
		if err != nil || (fi.Mode()&0o111 != 0) != exe || fi.Mode()&0o022 != 0 {
			t.Errorf("%s: %v %v; want executable %v, not writable but by its owner", p, fi.Mode(), err, exe)
		}
	}
	found, _ := Discover(rts, "")
	var got []string
	for _, r := range found {
		got = append(got, r.Lang+" "+r.Version+" "+r.Source)
	}
	if !strings.Contains(strings.Join(got, ";"), "go 1.99.1 go-1.99.1") {
		t.Errorf("Discover after the fetch: %q", got)
	}
	if entries, _ := os.ReadDir(rts); len(entries) != 1 {
		t.Errorf("the runtimes directory holds %d entries; want the tree only", len(entries))
	}
	// A second fetch finds it; a version that is not there says so.
	if again, err := FetchGo(context.Background(), rts, "1.99.1", env); err != nil || again != tree {
		t.Errorf("again: %s %v", again, err)
	}
	if _, err := FetchGo(context.Background(), rts, "1.98", env); err == nil || !strings.Contains(err.Error(), "fetching Go 1.98.0") {
		t.Errorf("a version the proxy lacks: %v", err)
	}
	if _, err := FetchGo(context.Background(), rts, "1.2.3; rm -rf /", env); err == nil {
		t.Error("a bad version was fetched")
	}
}
