// Package backup keeps apps' snapshots in a restic repository (Debian's
// restic): content-defined chunking, deduplication across snapshots and
// apps, AES-256 with Poly1305, `check`. The repository's password is
// generated once per platform and kept root-only; with it alone, stock
// restic restores any snapshot, without Gantry.
package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Repo is a restic repository (a directory here, sftp:…, rest:…) and
// its password. An SFTP repository is reached with the platform's own SSH
// identity (SSH).
type Repo struct {
	Location string
	Password string
	SSH      *SSH
}

// SSH is how restic reaches an SFTP repository: an identity and the
// server's known host key, written into Dir (root-only) when used.
type SSH struct {
	Dir        string
	PrivateKey string // OpenSSH PEM
	KnownHosts string // known_hosts lines; filled in on first contact
}

// NewPassword makes a repository password (32 random bytes).
func NewPassword() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewSSHKey makes an ed25519 identity: its OpenSSH private key and its
// authorized_keys line.
func NewSSHKey() (private, authorized string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "gantry-backup")
	if err != nil {
		return "", "", err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(block)), AuthorizedKey(sp), nil
}

// AuthorizedKey is an identity's authorized_keys line.
func AuthorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " gantry-backup"
}

// PublicKey is the authorized_keys line of an OpenSSH private key.
func PublicKey(private string) (string, error) {
	s, err := ssh.ParsePrivateKey([]byte(private))
	if err != nil {
		return "", err
	}
	return AuthorizedKey(s.PublicKey()), nil
}

// SFTPAddress is the user, host and port of an sftp: location
// (sftp:USER@HOST:PATH or sftp://USER@HOST[:PORT]/PATH).
func SFTPAddress(location string) (user, host, port string, ok bool) {
	rest, found := strings.CutPrefix(location, "sftp:")
	if !found {
		return "", "", "", false
	}
	port = "22"
	if u, err := url.Parse(location); err == nil && strings.HasPrefix(rest, "//") {
		if u.User == nil || u.Hostname() == "" {
			return "", "", "", false
		}
		if u.Port() != "" {
			port = u.Port()
		}
		return u.User.Username(), u.Hostname(), port, true
	}
	userHost, _, found := strings.Cut(rest, ":")
	user, host, found2 := strings.Cut(userHost, "@")
	if !found || !found2 || user == "" || host == "" {
		return "", "", "", false
	}
	return user, host, port, true
}

// sshCommand writes the identity and known hosts and returns restic's
// sftp.command for the location.
func (r Repo) sshCommand() (string, error) {
	user, host, port, ok := SFTPAddress(r.Location)
	if !ok {
		return "", fmt.Errorf("%q is not an SFTP location: use sftp://USER@HOST[:PORT]/PATH", r.Location)
	}
	if r.SSH == nil || r.SSH.PrivateKey == "" {
		return "", errors.New("the platform has no SSH identity for SFTP backups")
	}
	if err := os.MkdirAll(r.SSH.Dir, 0o700); err != nil {
		return "", err
	}
	id, kh := filepath.Join(r.SSH.Dir, "id_ed25519"), filepath.Join(r.SSH.Dir, "known_hosts")
	if err := writeIfChanged(id, r.SSH.PrivateKey); err != nil {
		return "", err
	}
	if r.SSH.KnownHosts != "" {
		if err := writeIfChanged(kh, r.SSH.KnownHosts); err != nil {
			return "", err
		}
	}
	return strings.Join([]string{"ssh", "-F", "/dev/null", "-i", id, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + kh,
		"-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
		"-p", port, "-l", user, host, "-s", "sftp"}, " "), nil
}

// KnownHosts is what ssh learnt of the SFTP server's key (after a first
// contact), to keep beside the identity.
func (r Repo) KnownHosts() string {
	if r.SSH == nil {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(r.SSH.Dir, "known_hosts"))
	return string(b)
}

func writeIfChanged(p, content string) error {
	if b, err := os.ReadFile(p); err == nil && string(b) == content {
		return nil
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (r Repo) cmd(ctx context.Context, args ...string) (*exec.Cmd, error) {
	if _, err := exec.LookPath("restic"); err != nil {
		return nil, errors.New("restic is not installed on this server: run scripts/install-deps")
	}
	if r.Password == "" {
		return nil, errors.New("the backup repository has no key")
	}
	base := []string{"--repo", r.Location, "--no-cache"}
	if strings.HasPrefix(r.Location, "sftp:") {
		c, err := r.sshCommand()
		if err != nil {
			return nil, err
		}
		base = append(base, "-o", "sftp.command="+c)
	}
	cmd := exec.CommandContext(ctx, "restic", append(base, args...)...)
	// The password in the environment (root-only to read), never in argv.
	cmd.Env = append(os.Environ(), "RESTIC_PROGRESS_FPS=0.2", "RESTIC_PASSWORD="+r.Password)
	// restic dies with the server: its lock is then stale, and the next
	// command removes it (unlock) instead of waiting 30 minutes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

func (r Repo) run(ctx context.Context, args ...string) ([]byte, error) {
	out, stderr, err := r.runOnce(ctx, args...)
	if err != nil && locked(stderr) {
		// A lock left by a restic that was killed (the server was):
		// unlock removes stale locks only, then try once more.
		if _, _, uerr := r.runOnce(ctx, "unlock"); uerr == nil {
			out, stderr, err = r.runOnce(ctx, args...)
		}
	}
	if err != nil {
		return out, r.explain(args[0], err, stderr)
	}
	return out, nil
}

func (r Repo) runOnce(ctx context.Context, args ...string) ([]byte, string, error) {
	cmd, err := r.cmd(ctx, args...)
	if err != nil {
		return nil, "", err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return out, strings.TrimSpace(stderr.String()), err
}

func locked(stderr string) bool {
	return strings.Contains(stderr, "repository is already locked") || strings.Contains(stderr, "unable to create lock")
}

// ErrNoRepository is a location that holds no restic repository yet.
var ErrNoRepository = errors.New("no restic repository there")

// explain turns what restic said into what to do.
func (r Repo) explain(op string, err error, stderr string) error {
	where := Redact(r.Location)
	switch {
	case strings.Contains(stderr, "wrong password or no key found"):
		return fmt.Errorf("the backup repository at %s was made with another key: set the target with that repository's key (`gantry admin backup target set %s --key-stdin`) or use another location", where, where)
	case strings.Contains(stderr, "Is there a repository at the following location?"), strings.Contains(stderr, "config file does not exist"):
		return fmt.Errorf("%w (%s)", ErrNoRepository, where)
	case strings.Contains(stderr, "Permission denied (publickey"):
		pub := ""
		if r.SSH != nil {
			pub, _ = PublicKey(r.SSH.PrivateKey)
		}
		return fmt.Errorf("the SFTP server at %s refused the platform's SSH key: add this line to the backup user's ~/.ssh/authorized_keys there: %s", where, pub)
	case strings.Contains(stderr, "Host key verification failed"), strings.Contains(stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		return fmt.Errorf("the SFTP server at %s shows another host key than when the target was set: if that is expected, set the target again", where)
	case strings.Contains(stderr, "no space left on device"), strings.Contains(stderr, "No space left on device"), strings.Contains(stderr, "disk quota exceeded"):
		return fmt.Errorf("the backup target %s is full: free space there or set another target (nothing was lost; earlier snapshots are intact)", where)
	case strings.Contains(stderr, "Connection refused"), strings.Contains(stderr, "Connection timed out"), strings.Contains(stderr, "No route to host"),
		strings.Contains(stderr, "Could not resolve hostname"), strings.Contains(stderr, "connection closed"), strings.Contains(stderr, "dial tcp"):
		return fmt.Errorf("the backup target %s cannot be reached: %s", where, lastLine(stderr))
	}
	return fmt.Errorf("restic %s: %v: %s", op, err, lastLine(stderr))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	return strings.Join(lines, "; ")
}

// Redact is a location without a password it may carry (rest:https://u:p@…).
func Redact(location string) string {
	scheme, rest, ok := strings.Cut(location, ":")
	if !ok || !strings.HasPrefix(rest, "http") {
		return location
	}
	if u, err := url.Parse(rest); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return scheme + ":" + u.String()
		}
	}
	return location
}

// Init makes the repository if it is not there yet.
func (r Repo) Init(ctx context.Context) error {
	_, err := r.run(ctx, "cat", "config")
	if err == nil || !errors.Is(err, ErrNoRepository) {
		return err
	}
	if !strings.Contains(r.Location, ":") {
		if err := os.MkdirAll(filepath.Dir(r.Location), 0o700); err != nil {
			return err
		}
	}
	_, err = r.run(ctx, "init")
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
	started := time.Now()
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
	// restic 0.14's summary gives the short ID (8 hex digits), which
	// every restic command takes; listing the snapshot for its whole ID
	// would open the repository once more (a key derivation, ~0.7 s).
	return Snapshot{ID: summary.SnapshotID, ShortID: summary.SnapshotID, Time: started.UTC(), Tags: tags, Paths: paths,
		Size: summary.Processed, Added: summary.Added}, nil
}

// SameID says whether two snapshot IDs (whole or short) name the same
// snapshot.
func SameID(a, b string) bool {
	n := min(len(a), len(b))
	return n >= 8 && a[:n] == b[:n]
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
		return fmt.Errorf("the backup repository %s has errors (restic check --read-data failed: %v); see its output above", Redact(r.Location), err)
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
