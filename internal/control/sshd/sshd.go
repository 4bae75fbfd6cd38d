// Package sshd is Gantry's SSH endpoint. It serves git (`git push`,
// `git clone` and `git fetch` of the caller's own apps, by running the
// system's git receive-pack/upload-pack), port-forwards (direct-tcpip
// channels to services in the caller's own gears, authorised by the
// agent) and `gantry ssh` (a command or a shell in one of the caller's
// gears, through the agent's exec). Users are identified by the public key
// that actually authenticated the connection (looked up after the
// handshake, never inside the auth callback). Anything else (a login
// shell on the host, another user's app) is refused with a clear message.
package sshd

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/creack/pty"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/names"
	"github.com/gantry-paas/gantry/internal/node/peer"
)

// PushGranter authorises a receive-pack run (the builder).
type PushGranter interface {
	GrantPush(user, appKey string) (env []string, release func())
}

// GearExec prepares a command inside an app's gear (the agent).
type GearExec interface {
	// ExecCommand prepares the command in a gear of this machine; for a
	// gear of another machine its error has an Elsewhere() method.
	ExecCommand(appKey, gearID, command string, tty bool, term string) (*exec.Cmd, string, error)
	// ExecRemote runs it in a gear of another machine, relaying the
	// streams, and returns its exit code.
	ExecRemote(ctx context.Context, gearID string, req peer.ExecRequest, stdio peer.ExecIO) (int, error)
	// StartOneOff starts a fresh gear of the app on this machine for a
	// command; done stops and removes it.
	StartOneOff(ctx context.Context, appKey string) (gearID string, done func(), err error)
}

// Options configure the SSH server.
type Options struct {
	Store  *store.Store
	Layout layout.Layout
	Log    *slog.Logger
	Listen string
	// ListenFunc binds Listen (default net.Listen); the server passes its
	// hand-off's, so a restart keeps the socket.
	ListenFunc func(network, addr string) (net.Listener, error)
	Builder    PushGranter
	Gears      GearExec
	// Services authorises and dials port-forwards (direct-tcpip).
	Services ServiceDialer
	// Refuse, when set, is said to every session and forward instead of
	// serving it (a machine without the control role).
	Refuse string
}

// Server is the SSH endpoint.
type Server struct {
	o      Options
	log    *slog.Logger
	ln     net.Listener
	srv    *ssh.Server
	signer gossh.Signer

	forwardLimit logLimit
}

// New loads (or creates and persists) the host key and binds the listener.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Listen == "" || o.Builder == nil {
		return nil, errors.New("sshd: Store, Listen and Builder are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	signer, err := hostKey(o.Layout.HostKey())
	if err != nil {
		return nil, fmt.Errorf("sshd: host key: %w", err)
	}
	listen := o.ListenFunc
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("sshd: listening on %s: %w (choose another address with --ssh)", o.Listen, err)
	}
	s := &Server{o: o, log: o.Log.With("component", "sshd"), ln: ln, signer: signer}
	s.srv = &ssh.Server{
		Handler:          s.handle,
		PublicKeyHandler: s.knownKey,
		HostSigners:      []ssh.Signer{signer},
		Version:          "Gantry",
		IdleTimeout:      10 * time.Minute,
		// No port forwarding, no subsystems: nil callbacks refuse them.
	}
	ssh.AllocatePty()(s.srv)
	s.srv.ChannelHandlers = map[string]ssh.ChannelHandler{
		"session":      ssh.DefaultSessionHandler,
		"direct-tcpip": s.forward,
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// HostKey is the server's public host key.
func (s *Server) HostKey() gossh.PublicKey { return s.signer.PublicKey() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, ssh.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("sshd: %w", err)
	}
}

func hostKey(path string) (gossh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := gossh.MarshalPrivateKey(priv, "gantry host key")
		if err != nil {
			return nil, err
		}
		data = pem.EncodeToMemory(block)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return gossh.ParsePrivateKey(data)
}

// knownKey accepts keys that belong to some user. Which user is decided
// later from the key that completed authentication.
func (s *Server) knownKey(ctx ssh.Context, key ssh.PublicKey) bool {
	var k store.SSHKey
	err := s.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.SSHKeyKey(gossh.FingerprintSHA256(key)), &k) })
	return err == nil
}

func (s *Server) userOf(sess ssh.Session) (string, bool) {
	pk := sess.PublicKey()
	if pk == nil {
		return "", false
	}
	return s.userByKey(pk)
}

func (s *Server) userByKey(pk gossh.PublicKey) (string, bool) {
	var k store.SSHKey
	err := s.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.SSHKeyKey(gossh.FingerprintSHA256(pk)), &k) })
	if err != nil {
		return "", false
	}
	return k.User, true
}

// GitCommand is a parsed git request: which service on which app.
type GitCommand struct {
	Service string // git-receive-pack, git-upload-pack
	Domain  string
	App     string
}

// ParseGitCommand parses the command git sends over SSH, e.g.
// `git-receive-pack '/acme/blog.git'`.
func ParseGitCommand(args []string) (*GitCommand, error) {
	if len(args) == 0 {
		return nil, errors.New("no command")
	}
	svc := args[0]
	if svc == "git" && len(args) > 1 { // "git upload-pack PATH"
		svc, args = "git-"+args[1], args[1:]
	}
	switch svc {
	case "git-receive-pack", "git-upload-pack":
	default:
		return nil, fmt.Errorf("%q is not a git command this server runs", args[0])
	}
	if len(args) != 2 {
		return nil, errors.New("expected exactly one repository path")
	}
	path := args[1]
	if strings.HasPrefix(path, "-") {
		return nil, errors.New("invalid repository path")
	}
	path = strings.TrimPrefix(strings.TrimPrefix(path, "/"), "~/")
	path = strings.TrimSuffix(strings.TrimSuffix(path, "/"), ".git")
	domain, app, ok := strings.Cut(path, "/")
	if !ok || names.Label("domain", domain) != nil || names.Label("app", app) != nil {
		return nil, fmt.Errorf("%q is not an app repository: use DOMAIN/APP.git, as `gantry app show` prints", args[1])
	}
	return &GitCommand{Service: svc, Domain: domain, App: app}, nil
}

func (s *Server) handle(sess ssh.Session) {
	if s.o.Refuse != "" {
		fmt.Fprintf(sess.Stderr(), "gantry: %s\n", s.o.Refuse)
		sess.Exit(1)
		return
	}
	user, ok := s.userOf(sess)
	if !ok {
		fmt.Fprintln(sess.Stderr(), "gantry: your key is not registered: add it with `gantry sshkey add`")
		sess.Exit(1)
		return
	}
	cmd := sess.Command()
	if len(cmd) == 0 {
		fmt.Fprintf(sess.Stderr(), "Hi %s! You are authenticated, but Gantry does not offer a login shell here.\nUse this address for git: `git clone` the git URL that `gantry app show` prints.\n", user)
		sess.Exit(1)
		return
	}
	if cmd[0] == "gear" || cmd[0] == "run" {
		sess.Exit(s.gearShell(sess, user))
		return
	}
	gc, err := ParseGitCommand(cmd)
	if err != nil {
		s.log.Warn("refused ssh command", "user", user, "cmd", truncate(sess.RawCommand(), 200), "err", err)
		fmt.Fprintf(sess.Stderr(), "gantry: %v. This endpoint serves git only (push, clone, fetch).\n", err)
		sess.Exit(1)
		return
	}
	var app store.App
	err = s.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.AppKey(gc.Domain, gc.App), &app) })
	if err != nil || app.Owner != user {
		s.log.Warn("refused repository", "user", user, "domain", gc.Domain, "app", gc.App)
		fmt.Fprintf(sess.Stderr(), "gantry: you have no app %q in domain %q: check the URL with `gantry app show %s`\n", gc.App, gc.Domain, gc.App)
		sess.Exit(1)
		return
	}
	code := s.runGit(sess, user, &app, gc)
	sess.Exit(code)
}

func (s *Server) runGit(sess ssh.Session, user string, app *store.App, gc *GitCommand) int {
	repo := s.o.Layout.Repo(app.ID)
	c := exec.CommandContext(sess.Context(), "git", strings.TrimPrefix(gc.Service, "git-"), repo)
	env := append(os.Environ(), "GANTRY_USER="+user)
	for _, kv := range sess.Environ() {
		if strings.HasPrefix(kv, "GIT_PROTOCOL=") {
			env = append(env, kv)
		}
	}
	if gc.Service == "git-receive-pack" {
		penv, release := s.o.Builder.GrantPush(user, app.Key())
		defer release()
		env = append(env, penv...)
	}
	c.Env = env
	// An explicit pipe: Wait must not wait for the client to close its
	// side, which git clients do only after they see the exit status.
	stdin, err := c.StdinPipe()
	if err != nil {
		return 1
	}
	c.Stdout = sess
	c.Stderr = sess.Stderr()
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	if err := c.Start(); err != nil {
		s.log.Error("starting git", "err", err)
		return 1
	}
	go func() {
		io.Copy(stdin, sess)
		stdin.Close()
	}()
	if err := c.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		s.log.Error("running git", "err", err)
		return 1
	}
	s.log.Info("git", "user", user, "app", app.FullName(), "service", gc.Service)
	return 0
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// GearCommand is a parsed `gear DOMAIN/APP [--gear ID] [-- COMMAND]`.
type GearCommand struct {
	Domain, App, Gear string
	Command           string // verbatim shell command, "" for a shell
	// OneOff (`run DOMAIN/APP [-- COMMAND]`, gantry run): in a fresh gear
	// made for it, removed afterwards.
	OneOff bool
}

// ParseGearCommand parses the raw command of a `gantry ssh` session. The
// part after " -- " is kept verbatim (the client quoted it for a shell).
func ParseGearCommand(raw string) (*GearCommand, error) {
	head, command, _ := strings.Cut(raw, " -- ")
	if strings.HasSuffix(head, " --") {
		head = strings.TrimSuffix(head, " --")
	}
	f := strings.Fields(head)
	usage := errors.New("usage: gear DOMAIN/APP [--gear ID] [-- COMMAND], or run DOMAIN/APP [-- COMMAND]")
	oneOff := len(f) > 0 && f[0] == "run"
	if len(f) < 2 || (f[0] != "gear" && !oneOff) || (oneOff && len(f) != 2) {
		return nil, usage
	}
	domain, app, ok := strings.Cut(f[1], "/")
	if !ok || names.Label("domain", domain) != nil || names.Label("app", app) != nil {
		return nil, fmt.Errorf("%q is not DOMAIN/APP", f[1])
	}
	gc := &GearCommand{Domain: domain, App: app, Command: strings.TrimSpace(command), OneOff: oneOff}
	switch {
	case len(f) == 2:
	case len(f) == 4 && f[2] == "--gear" && names.Label("gear", f[3]) == nil:
		gc.Gear = f[3]
	default:
		return nil, usage
	}
	return gc, nil
}

// gearShell runs a shell or command in one of the caller's gears.
func (s *Server) gearShell(sess ssh.Session, user string) int {
	gc, err := ParseGearCommand(sess.RawCommand())
	if err != nil {
		fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
		return 2
	}
	var app store.App
	err = s.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.AppKey(gc.Domain, gc.App), &app) })
	if err != nil || app.Owner != user {
		s.log.Warn("refused gear shell", "user", user, "domain", gc.Domain, "app", gc.App)
		fmt.Fprintf(sess.Stderr(), "gantry: you have no app %q in domain %q\n", gc.App, gc.Domain)
		return 1
	}
	if s.o.Gears == nil {
		fmt.Fprintln(sess.Stderr(), "gantry: gear shells are not available on this server")
		return 1
	}
	ptyReq, _, isPty := sess.Pty()
	if gc.OneOff {
		id, done, err := s.o.Gears.StartOneOff(sess.Context(), app.Key())
		if err != nil {
			fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
			return 1
		}
		defer done()
		gc.Gear = id
		s.log.Info("one-off run", "user", user, "app", app.FullName(), "gear", id, "interactive", gc.Command == "")
	}
	cmd, gearID, err := s.o.Gears.ExecCommand(app.Key(), gc.Gear, gc.Command, isPty, ptyReq.Term)
	var elsewhere interface{ Elsewhere() string }
	if errors.As(err, &elsewhere) {
		s.log.Info("gear shell", "user", user, "app", app.FullName(), "gear", gearID, "machine", elsewhere.Elsewhere(), "interactive", gc.Command == "")
		return s.remoteShell(sess, gearID, gc.Command, isPty, ptyReq)
	}
	if err != nil {
		fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
		return 1
	}
	s.log.Info("gear shell", "user", user, "app", app.FullName(), "gear", gearID, "interactive", gc.Command == "")
	if isPty {
		if err := ptyReq.Start(cmd); err != nil {
			fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
			return 1
		}
		// The child has the slave now; ours must close for the master's
		// reads to end when the child exits.
		ptyReq.Slave.Close()
		go io.Copy(&ptyReq, sess)
		drained := make(chan struct{})
		go func() { io.Copy(sess, &ptyReq); close(drained) }()
		code := exitCode(cmd.Wait())
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
		}
		return code
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1
	}
	cmd.Stdout, cmd.Stderr = sess, sess.Stderr()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
		return 1
	}
	go func() { io.Copy(stdin, sess); stdin.Close() }()
	return exitCode(cmd.Wait())
}

// remoteShell runs the command in a gear of another machine: that
// machine runs it (in a terminal there when the session has one) and the
// cluster port carries the streams and window changes.
func (s *Server) remoteShell(sess ssh.Session, gearID, command string, isPty bool, ptyReq ssh.Pty) int {
	req := peer.ExecRequest{Command: command, TTY: isPty, Term: ptyReq.Term, Cols: ptyReq.Window.Width, Rows: ptyReq.Window.Height}
	stdio := peer.ExecIO{Stdin: sess, Stdout: sess, Stderr: sess.Stderr()}
	if isPty && ptyReq.Slave != nil {
		// The SSH library resizes the session's own terminal on each
		// window change (and takes the changes off winCh): follow its
		// size.
		sizes := make(chan [2]int, 1)
		go func() {
			defer close(sizes)
			last := [2]int{req.Cols, req.Rows}
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-sess.Context().Done():
					return
				case <-t.C:
				}
				ws, err := pty.GetsizeFull(ptyReq.Slave)
				if err != nil {
					return
				}
				if cur := [2]int{int(ws.Cols), int(ws.Rows)}; cur != last {
					last = cur
					select {
					case sizes <- cur:
					case <-sess.Context().Done():
						return
					}
				}
			}
		}()
		stdio.Resize = sizes
	}
	code, err := s.o.Gears.ExecRemote(sess.Context(), gearID, req, stdio)
	if err != nil {
		fmt.Fprintf(sess.Stderr(), "gantry: %v\n", err)
		return 1
	}
	return code
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

// logLimit lets at most 10 lines a second through (clients trigger them).
type logLimit struct {
	mu     sync.Mutex
	second int64
	n      int
}

func (l *logLimit) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().Unix()
	if now != l.second {
		l.second, l.n = now, 0
	}
	l.n++
	return l.n <= 10
}
