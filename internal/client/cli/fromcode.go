package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// scpLike is git's user@host:path form of a remote.
var scpLike = regexp.MustCompile(`^[^/@:]+@[^/:]+:`)

// isRemote says whether from names a repository to clone (a URL or
// user@host:path) rather than a directory here.
func isRemote(from string) bool {
	return strings.Contains(from, "://") || scpLike.MatchString(from)
}

// prepareCode makes the repository ready to push before the app exists:
// a directory here must hold a commit; a URL (or user@host:path) is
// cloned on this machine (the server never fetches a URL a user names).
// done removes the clone.
func (c *cli) prepareCode(ctx context.Context, from string) (dir string, done func(), err error) {
	dir, done = from, func() {}
	if isRemote(from) {
		tmp, err := os.MkdirTemp("", "gantry-from-code")
		if err != nil {
			return "", done, err
		}
		done = func() { os.RemoveAll(tmp) }
		dir = filepath.Join(tmp, "src")
		fmt.Fprintf(c.o.Stderr, "Cloning %s\n", from)
		clone := exec.CommandContext(ctx, "git", "clone", "--quiet", from, dir)
		clone.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		clone.Stdout, clone.Stderr = c.o.Stderr, c.o.Stderr
		if err := clone.Run(); err != nil {
			done()
			return "", func() {}, fmt.Errorf("cloning %s: %v (is it a git repository you can read?); no app was created", from, err)
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--verify", "HEAD").CombinedOutput(); err != nil {
		done()
		return "", func() {}, fmt.Errorf("%s is not a git repository with a commit (%s): commit your code first, or give its URL; no app was created", from, strings.TrimSpace(string(out)))
	}
	return dir, done, nil
}

// pushCode pushes the HEAD of the repository in dir to the app's branch,
// over git-over-HTTP with the API token in git's environment, never its
// arguments. The build streams to stderr as git's remote: lines.
func (c *cli) pushCode(ctx context.Context, cl *client.Client, app apitypes.AppView, dir, from string) error {
	if client.PlainHTTP(app.GitHTTPURL) && !cl.Insecure {
		return fmt.Errorf("pushing %s needs your API token, which is not sent over plain HTTP to a server that is not on this machine; %s is created: push over SSH instead: git -C %s push %s HEAD:%s", from, app.Name, dir, app.GitURL, app.Branch)
	}
	env := append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader",
		"GIT_CONFIG_VALUE_0=Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("gantry:"+cl.Token)))
	if cl.CAPEM != "" {
		f, err := os.CreateTemp("", "gantry-ca-*.pem")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		f.WriteString(cl.CAPEM)
		f.Close()
		env = append(env, "GIT_SSL_CAINFO="+f.Name())
	}
	fmt.Fprintf(c.o.Stderr, "Pushing %s to %s\n", from, app.Name)
	push := exec.CommandContext(ctx, "git", "-C", dir, "push", app.GitHTTPURL, "HEAD:refs/heads/"+app.Branch)
	push.Env = env
	push.Stdout, push.Stderr = c.o.Stderr, c.o.Stderr
	if err := push.Run(); err != nil {
		return fmt.Errorf("the code did not deploy (see the output above); %s is created, and any push deploys it: git push %s HEAD:%s", app.Name, app.GitURL, app.Branch)
	}
	return nil
}
