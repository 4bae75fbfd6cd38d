package gearinit

import (
	"os"
	"path/filepath"
	"testing"
)

// The gear's command is found on its PATH (Go in /usr/local/go/bin, the
// app's own bin directories), then in the usual places.
func TestLookPathUsesThePATH(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "mytool")
	os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	if p, err := lookPath("mytool"); err != nil || p != tool {
		t.Fatalf("lookPath(mytool) = %q, %v; want %q", p, err, tool)
	}
	if p, err := lookPath("sh"); err != nil || !filepath.IsAbs(p) {
		t.Fatalf("lookPath(sh) = %q, %v", p, err)
	}
	if p, _ := lookPath("./.gantry/bin/web"); p != "./.gantry/bin/web" {
		t.Fatalf("a relative path with a slash: %q", p)
	}
	if _, err := lookPath("no-such-tool-here"); err == nil {
		t.Fatal("found a tool that does not exist")
	}
}
