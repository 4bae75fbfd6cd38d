package gitrepo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

// Repositories in a cluster: a push lands on the control machine that got
// it; every other control machine then copies the repository (a git
// bundle of all its refs, over the cluster port), so that losing one
// machine loses no repository and a push may go to any of them.

// Bundle writes a bundle of every ref of the repository at dir to w.
func Bundle(ctx context.Context, dir string, w io.Writer) error {
	cmd := exec.CommandContext(ctx, "git", "--git-dir", dir, "bundle", "create", "-", "--all")
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git bundle: %v %s", err, stderr.String())
	}
	return nil
}

// HasCommit reports whether the repository at dir holds commit.
func HasCommit(ctx context.Context, dir, commit string) bool {
	return exec.CommandContext(ctx, "git", "--git-dir", dir, "cat-file", "-e", commit+"^{commit}").Run() == nil
}

// FetchBundle makes the branches of the repository at dir those of the
// bundle (creating the repository, configured and hooked, its HEAD the
// app's branch, if missing).
func FetchBundle(ctx context.Context, dir, bundle, branch, exe string) error {
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		if out, err := exec.CommandContext(ctx, "git", "init", "--quiet", "--bare", "--initial-branch="+branch, dir).CombinedOutput(); err != nil {
			return fmt.Errorf("git init: %v: %s", err, out)
		}
		if err := Configure(ctx, dir); err != nil {
			return err
		}
		if err := InstallHook(dir, exe); err != nil {
			return err
		}
	}
	return git(ctx, dir, nil, nil, "fetch", "--quiet", "--force", "--prune", bundle, "+refs/heads/*:refs/heads/*")
}

// Syncer keeps this control machine's copies of the repositories: an app
// whose active deployment was built elsewhere, from a commit this machine
// does not have, is fetched from the machine that built it.
type Syncer struct {
	Store  *store.Store
	Layout layout.Layout
	Node   string
	Exe    string
	// Fetch writes the bundle of an app's repository on a machine to w.
	Fetch func(ctx context.Context, node, appID string, w io.Writer) error
	Log   *slog.Logger
}

// Run syncs after each change of the store (and every 10s, for pushes
// whose objects were not in place yet) until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	watch := s.Store.Watch(ctx)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		s.syncAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-t.C:
		}
	}
}

func (s *Syncer) syncAll(ctx context.Context) {
	type want struct {
		app    store.App
		commit string
		from   string
	}
	var todo []want
	live, _ := s.Store.Live()
	s.Store.View(func(tx *store.Tx) error {
		apps, err := store.ListApps(tx)
		for _, a := range apps {
			if a.ActiveDeployment == "" {
				continue
			}
			var dep store.Deployment
			if tx.Get(store.DeploymentKey(a.ID, a.ActiveDeployment), &dep) != nil || dep.Node == "" || dep.Node == s.Node || !live[dep.Node] {
				continue
			}
			todo = append(todo, want{a, dep.Commit, dep.Node})
		}
		return err
	})
	for _, w := range todo {
		dir := s.Layout.Repo(w.app.ID)
		if HasCommit(ctx, dir, w.commit) {
			continue
		}
		if err := s.sync(ctx, dir, w.app.ID, w.app.Branch, w.from); err != nil {
			s.Log.Warn("copying an app's repository", "app", w.app.FullName(), "from", w.from, "err", err)
			continue
		}
		s.Log.Info("copied an app's repository", "app", w.app.FullName(), "from", w.from, "commit", w.commit)
	}
}

func (s *Syncer) sync(ctx context.Context, dir, appID, branch, from string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dir), ".bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := s.Fetch(fctx, from, appID, f); err != nil {
		return err
	}
	return FetchBundle(fctx, dir, f.Name(), branch, s.Exe)
}
