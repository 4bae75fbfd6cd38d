// Package gitrepo creates and configures an app's bare git repository with
// the system git: the first commit (a starter app) and the pre-receive hook
// that hands pushes to the builder. It does not serve git; sshd and the
// HTTP endpoint run git's own receive-pack/upload-pack.
package gitrepo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// File is one file of a starter tree.
type File struct {
	Body       string
	Executable bool
}

// Init creates a bare repository at dir whose branch holds one commit with
// files, then installs the hook. exe is the gantry binary.
func Init(ctx context.Context, dir, branch string, files map[string]File, exe string) error {
	if out, err := exec.CommandContext(ctx, "git", "init", "--quiet", "--bare", "--initial-branch="+branch, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	if err := Configure(ctx, dir); err != nil {
		return err
	}
	if len(files) > 0 {
		if err := commitFiles(ctx, dir, branch, files); err != nil {
			return err
		}
	}
	return InstallHook(dir, exe)
}

// config is how every app repository is set up. Forced pushes reach the
// builder's hook (which deploys them and says history was replaced);
// deleting a branch never does.
var config = [][2]string{
	{"receive.denyNonFastForwards", "false"},
	{"receive.denyDeletes", "true"},
	{"receive.fsckObjects", "true"},
	{"uploadpack.allowFilter", "true"},
	{"http.receivepack", "true"},
	{"core.logAllRefUpdates", "true"},
}

// Configure (re)applies the repository settings; the server runs it at
// every start, so repositories made by an older version follow.
func Configure(ctx context.Context, dir string) error {
	for _, kv := range config {
		if err := git(ctx, dir, nil, nil, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// InstallHook (re)writes the pre-receive hook to call exe. The server runs
// it at every start so that the hooks follow the binary if it moved.
func InstallHook(dir, exe string) error {
	hook := "#!/bin/sh\n# Installed by Gantry: hands pushes to the builder.\nexec " + shellQuote(exe) + " hook pre-receive\n"
	path := filepath.Join(dir, "hooks", "pre-receive")
	if cur, err := os.ReadFile(path); err == nil && string(cur) == hook {
		return nil
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hook), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func commitFiles(ctx context.Context, dir, branch string, files map[string]File) error {
	index := filepath.Join(dir, "gantry-init.index")
	defer os.Remove(index)
	env := []string{"GIT_INDEX_FILE=" + index}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := files[n]
		var sha bytes.Buffer
		if err := git(ctx, dir, env, &sha, "hash-object", "-w", "--stdin", "--path", n, "<", f.Body); err != nil {
			return err
		}
		mode := "100644"
		if f.Executable {
			mode = "100755"
		}
		if err := git(ctx, dir, env, nil, "update-index", "--add", "--cacheinfo", mode+","+strings.TrimSpace(sha.String())+","+n); err != nil {
			return err
		}
	}
	var tree, commit bytes.Buffer
	if err := git(ctx, dir, env, &tree, "write-tree"); err != nil {
		return err
	}
	cenv := append(env, "GIT_AUTHOR_NAME=Gantry", "GIT_AUTHOR_EMAIL=gantry@localhost",
		"GIT_COMMITTER_NAME=Gantry", "GIT_COMMITTER_EMAIL=gantry@localhost")
	if err := git(ctx, dir, cenv, &commit, "commit-tree", strings.TrimSpace(tree.String()), "-m", "Starter app from Gantry"); err != nil {
		return err
	}
	return git(ctx, dir, env, nil, "update-ref", "refs/heads/"+branch, strings.TrimSpace(commit.String()))
}

// Head returns the commit a branch points at.
func Head(ctx context.Context, dir, branch string) (string, error) {
	var out bytes.Buffer
	if err := git(ctx, dir, nil, &out, "rev-parse", "--verify", "refs/heads/"+branch); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// git runs a git command in the bare repository dir. An argument "<"
// followed by a string feeds that string on stdin.
func git(ctx context.Context, dir string, env []string, stdout *bytes.Buffer, args ...string) error {
	var stdin string
	for i, a := range args {
		if a == "<" && i == len(args)-2 {
			stdin, args = args[i+1], args[:i]
			break
		}
	}
	cmd := exec.CommandContext(ctx, "git", append([]string{"--git-dir", dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
