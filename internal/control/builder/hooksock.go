package builder

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"

	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Environment variables that carry a push from the SSH or HTTP endpoint,
// through `git receive-pack`, to the pre-receive hook.
const (
	EnvHookSocket = "GANTRY_HOOK_SOCKET"
	EnvPushToken  = "GANTRY_PUSH_TOKEN"
)

const zeroSHA = "0000000000000000000000000000000000000000"

// GrantPush authorises one receive-pack run for user on an app. It
// returns the environment receive-pack runs with (the hook socket, the
// one-time grant, the push size limit) and a release for when the run
// ends.
func (b *Builder) GrantPush(user, appKey string) (env []string, release func()) {
	raw := make([]byte, 16)
	rand.Read(raw)
	token := hex.EncodeToString(raw)
	env = []string{EnvHookSocket + "=" + b.o.Layout.HookSocket(), EnvPushToken + "=" + token,
		// git itself refuses a larger pack, before anything is stored:
		// "fatal: pack exceeds maximum allowed size".
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=receive.maxInputSize", "GIT_CONFIG_VALUE_0=" + strconv.FormatInt(b.o.MaxPushBytes, 10)}
	b.mu.Lock()
	b.push[token] = pushGrant{user: user, appKey: appKey}
	b.mu.Unlock()
	return env, func() {
		b.mu.Lock()
		delete(b.push, token)
		b.mu.Unlock()
	}
}

type hookRequest struct {
	Token   string      `json:"token"`
	Updates []refUpdate `json:"updates"`
	GitEnv  []string    `json:"git_env"`
}

type refUpdate struct {
	Old, New, Ref string
}

// Frames on the hook socket: a type byte, a length, the payload.
const (
	frameOutput = 'o'
	frameExit   = 'x'
)

type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) frame(typ byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	if _, err := f.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := f.w.Write(p)
	return err
}

func (f *frameWriter) Write(p []byte) (int, error) {
	if err := f.frame(frameOutput, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Run serves the hook socket until ctx ends.
func (b *Builder) Run(ctx context.Context) error {
	path := b.o.Layout.HookSocket()
	os.MkdirAll(b.o.Layout.RunDir(), 0o700)
	os.Chmod(b.o.Layout.RunDir(), 0o700)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("builder: hook socket: %w", err)
	}
	// The path stays at close: after a hand-off it is the new process's
	// socket (the next start replaces it anyway).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	os.Chmod(path, 0o600)
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				return nil
			}
			return fmt.Errorf("builder: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			b.serveHook(ctx, c)
		}()
	}
}

func (b *Builder) serveHook(ctx context.Context, c net.Conn) {
	fw := &frameWriter{w: c}
	var req hookRequest
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&req); err != nil {
		fw.frame(frameExit, []byte{1})
		return
	}
	b.mu.Lock()
	grant, ok := b.push[req.Token]
	b.mu.Unlock()
	if !ok {
		fmt.Fprintln(fw, "push refused: it did not come through Gantry's SSH or HTTP git endpoint")
		fw.frame(frameExit, []byte{1})
		return
	}
	// The push goes on if the pusher disconnects; the build must not be
	// cut half-way, and a later push waits for it.
	code := byte(0)
	if err := b.receive(context.WithoutCancel(ctx), grant, req, fw); err != nil {
		fmt.Fprintf(fw, "\n !     %s\n\n", strings.ReplaceAll(err.Error(), "\n", "\n !     "))
		code = 1
	}
	fw.frame(frameExit, []byte{code})
}

func (b *Builder) receive(ctx context.Context, grant pushGrant, req hookRequest, out io.Writer) error {
	var app store.App
	if err := b.o.Store.View(func(tx *store.Tx) error { return tx.Get(grant.appKey, &app) }); err != nil {
		return fmt.Errorf("app %s no longer exists", store.AppName(grant.appKey))
	}
	branch := "refs/heads/" + app.Branch
	deployed := false
	for _, u := range req.Updates {
		switch {
		case u.Ref != branch:
			fmt.Fprintf(out, "-----> %s pushed; only %s deploys\n", u.Ref, app.Branch)
		case u.New == zeroSHA:
			return fmt.Errorf("deleting %s, the deployment branch, is not allowed", app.Branch)
		default:
			if u.Old != zeroSHA && !isAncestor(ctx, b.o.Layout.Repo(app.ID), req.GitEnv, u.Old, u.New) {
				fmt.Fprintf(out, "-----> Forced push: the history of %s was replaced (the previous deployments stay for rollback: `gantry deployment list %s`)\n", app.Branch, app.Name)
			}
			if err := b.Deploy(ctx, grant.appKey, u.New, req.GitEnv, out); err != nil {
				return fmt.Errorf("deploy failed; the running app is unchanged.\n%v", err)
			}
			deployed = true
		}
	}
	if !deployed && len(req.Updates) == 0 {
		fmt.Fprintln(out, "-----> nothing to deploy")
	}
	return nil
}

func isAncestor(ctx context.Context, repo string, gitEnv []string, old, new string) bool {
	cmd := exec.CommandContext(ctx, "git", "merge-base", "--is-ancestor", old, new)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), gitEnv...)
	return cmd.Run() == nil
}

// HookMain is `gantry hook pre-receive`: it runs inside git receive-pack,
// forwards the ref updates to the builder and streams its output back to
// the pusher. Its exit status accepts (0) or rejects the push.
func HookMain(stdin io.Reader, stdout, stderr io.Writer) int {
	sock, token := os.Getenv(EnvHookSocket), os.Getenv(EnvPushToken)
	if sock == "" || token == "" {
		fmt.Fprintln(stderr, "push refused: push through Gantry's git endpoints, not to the repository directly")
		return 1
	}
	req := hookRequest{Token: token}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 {
			req.Updates = append(req.Updates, refUpdate{Old: f[0], New: f[1], Ref: f[2]})
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") {
			req.GitEnv = append(req.GitEnv, kv)
		}
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintf(stderr, "push refused: the Gantry server is not reachable (%v)\n", err)
		return 1
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		fmt.Fprintf(stderr, "push refused: %v\n", err)
		return 1
	}
	br := bufio.NewReader(c)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			fmt.Fprintln(stderr, "push refused: the Gantry server closed the connection during the deploy")
			return 1
		}
		p := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(br, p); err != nil {
			return 1
		}
		switch hdr[0] {
		case frameOutput:
			stdout.Write(p)
		case frameExit:
			if len(p) == 1 {
				return int(p[0])
			}
			return 1
		}
	}
}
