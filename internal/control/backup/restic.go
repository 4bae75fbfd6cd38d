// Package backup keeps apps' snapshots in a restic repository (Debian's
// restic): content-defined chunking, deduplication across snapshots and
// apps, AES-256 with Poly1305, `check`. The repository's password is
// generated once per platform and kept root-only; with it alone, stock
// restic restores any snapshot, without Gantry.
package backup

import (
	"bytes"
	"context"
	"crypto/rand"
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
)

// Repo is a restic repository (a directory here, sftp:…, rest:…) and the
// file with its password.
type Repo struct {
	Location string
	KeyFile  string
}

// Key returns the repository's password, making it (32 random bytes,
// root-only) the first time.
func (r Repo) Key() (string, error) {
	if b, err := os.ReadFile(r.KeyFile); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(filepath.Dir(r.KeyFile), 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	rand.Read(b)
	k := base64.RawURLEncoding.EncodeToString(b)
	f, err := os.OpenFile(r.KeyFile, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // made meanwhile
			return r.Key()
		}
		return "", err
	}
	defer f.Close()
	_, err = f.WriteString(k + "\n")
	return k, err
}

func (r Repo) cmd(ctx context.Context, args ...string) (*exec.Cmd, error) {
	if _, err := exec.LookPath("restic"); err != nil {
		return nil, errors.New("restic is not installed on this server: run scripts/install-deps")
	}
	if _, err := r.Key(); err != nil {
		return nil, fmt.Errorf("the backup key: %w", err)
	}
	cmd := exec.CommandContext(ctx, "restic", append([]string{"--repo", r.Location, "--password-file", r.KeyFile, "--no-cache"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PROGRESS_FPS=0.2")
	return cmd, nil
}

func (r Repo) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := r.cmd(ctx, args...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("restic %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Init makes the repository if it is not there yet.
func (r Repo) Init(ctx context.Context) error {
	if _, err := r.run(ctx, "cat", "config"); err == nil {
		return nil
	}
	if !strings.Contains(r.Location, ":") {
		if err := os.MkdirAll(filepath.Dir(r.Location), 0o700); err != nil {
			return err
		}
	}
	_, err := r.run(ctx, "init")
	return err
}

// Snapshot is one snapshot of the repository.
type Snapshot struct {
	ID      string    `json:"id"`
	ShortID string    `json:"short_id"`
	Time    time.Time `json:"time"`
	Tags    []string  `json:"tags"`
	Paths   []string  `json:"paths"`
	// Size is what the backup read, Added what it added to the
	// repository (from its summary; not in restic's list).
	Size, Added int64 `json:"-"`
}

// Backup saves paths (without excluded ones) as one snapshot with tags
// and returns it.
func (r Repo) Backup(ctx context.Context, tags, paths, exclude []string) (Snapshot, error) {
	args := []string{"backup", "--json", "--host", "gantry"}
	for _, t := range tags {
		args = append(args, "--tag", t)
	}
	for _, e := range exclude {
		args = append(args, "--exclude", e)
	}
	out, err := r.run(ctx, append(args, paths...)...)
	if err != nil {
		return Snapshot{}, err
	}
	var summary struct {
		Type       string `json:"message_type"`
		SnapshotID string `json:"snapshot_id"`
		Added      int64  `json:"data_added"`
		Processed  int64  `json:"total_bytes_processed"`
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		var m struct {
			Type string `json:"message_type"`
		}
		if json.Unmarshal(line, &m) == nil && m.Type == "summary" {
			json.Unmarshal(line, &summary)
		}
	}
	if summary.SnapshotID == "" {
		return Snapshot{}, fmt.Errorf("restic backup said no snapshot: %s", out)
	}
	// (restic 0.14's summary gives the short ID; its list, the whole.)
	out, err = r.run(ctx, "snapshots", "--json", summary.SnapshotID)
	var found []Snapshot
	if err != nil || json.Unmarshal(out, &found) != nil || len(found) != 1 {
		return Snapshot{}, fmt.Errorf("restic did not list the new snapshot %s: %v", summary.SnapshotID, err)
	}
	s := found[0]
	s.Size, s.Added = summary.Processed, summary.Added
	return s, nil
}

// Snapshots lists the snapshots with a tag, oldest first.
func (r Repo) Snapshots(ctx context.Context, tag string) ([]Snapshot, error) {
	out, err := r.run(ctx, "snapshots", "--json", "--tag", tag)
	if err != nil {
		return nil, err
	}
	var s []Snapshot
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("reading restic's snapshot list: %w", err)
	}
	return s, nil
}

// Restore writes a snapshot's files under target (at their full paths),
// verifying what it wrote.
func (r Repo) Restore(ctx context.Context, id, target string) error {
	_, err := r.run(ctx, "restore", id, "--target", target, "--verify")
	return err
}

// Check checks the repository's integrity, reading all its data back.
func (r Repo) Check(ctx context.Context, out io.Writer) error {
	cmd, err := r.cmd(ctx, "check", "--read-data")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the backup repository has errors (restic check): %w", err)
	}
	return nil
}

// Keep is a retention policy (restic forget's --keep-* flags).
type Keep struct{ Last, Daily, Weekly, Monthly int }

// Forget removes the snapshots with tag beyond the policy and prunes the
// data no snapshot uses. It returns the IDs of the snapshots kept.
func (r Repo) Forget(ctx context.Context, tag string, k Keep) ([]string, error) {
	args := []string{"forget", "--json", "--prune", "--tag", tag}
	for _, f := range []struct {
		flag string
		n    int
	}{{"--keep-last", k.Last}, {"--keep-daily", k.Daily}, {"--keep-weekly", k.Weekly}, {"--keep-monthly", k.Monthly}} {
		if f.n > 0 {
			args = append(args, f.flag, strconv.Itoa(f.n))
		}
	}
	if _, err := r.run(ctx, args...); err != nil {
		return nil, err
	}
	left, err := r.Snapshots(ctx, tag)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range left {
		ids = append(ids, s.ID)
	}
	return ids, nil
}
