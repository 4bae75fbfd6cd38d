package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// oneOffPrefix starts the container IDs of one-off runs (gears' IDs never
// start with it), so that CleanOneOffs knows them.
const oneOffPrefix = "x"

// RunOnce runs args in a container of their own: the sandbox's user,
// mounts and limits, the network of gear net, gear-init as PID 1.
func (n *Namespaces) RunOnce(ctx context.Context, net string, sb Sandbox, out io.Writer, timeout time.Duration, args []string) error {
	id := oneOffPrefix + sb.ID
	bundle := filepath.Join(n.OneOffs, id)
	defer os.RemoveAll(bundle)
	parent := n.Cgroup(id)
	if err := sandbox.SetLimits(parent, sb.Limits); err != nil {
		return err
	}
	defer sandbox.RemoveCgroup(parent)
	err := sandbox.WriteBundle(bundle, sandbox.Spec{
		ID: id, Env: sb.Env, Cwd: sb.Cwd, UID: uint32(sb.UID), GID: uint32(sb.UID),
		Hostname: sb.Hostname, ResolvConf: n.ResolvConf, Mounts: sb.Mounts,
		Args: append([]string{n.Init, "gear-init", "--"}, args...), NetnsPath: n.Netns(net), CgroupParent: parent,
	})
	if err != nil {
		return err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	rargs := shim.RuncArgs(n.RuncRoot, bundle, id)
	cmd := exec.Command(rargs[0], rargs[1:]...)
	cmd.Dir = bundle
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		exec.Command("runc", "--root", n.RuncRoot, "kill", "--all", id, "KILL").Run()
		err = <-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%s did not finish within %s", filepath.Base(args[0]), timeout)
		}
	}
	oom := cgroup.OOMKills(parent) > 0 // read before the delete drops runc's leaf
	exec.Command("runc", "--root", n.RuncRoot, "delete", "-f", id).Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && oom {
		limit := sb.LimitName
		if limit == "" {
			limit = "its memory limit"
		}
		return fmt.Errorf("%s ran out of memory and was killed (%s); make it use less, or raise the limit", filepath.Base(args[0]), limit)
	}
	if errors.As(err, &ee) {
		if ee.ExitCode() == 126 || ee.ExitCode() == 127 {
			return fmt.Errorf("%s could not be run in the gear (exit %d): is it a program with a #! line?", filepath.Base(args[0]), ee.ExitCode())
		}
		return fmt.Errorf("%s exited with status %d", filepath.Base(args[0]), ee.ExitCode())
	}
	return err
}

// CleanOneOffs removes the one-off containers (with their cgroups and
// bundles) a server killed in the middle of a build left behind: none
// runs while the agent starts.
func (n *Namespaces) CleanOneOffs() {
	out, err := exec.Command("runc", "--root", n.RuncRoot, "list", "-q").Output()
	if err != nil {
		return
	}
	for _, id := range strings.Fields(string(out)) {
		if !strings.HasPrefix(id, oneOffPrefix) {
			continue // gears' containers are the shims' business
		}
		exec.Command("runc", "--root", n.RuncRoot, "delete", "-f", id).Run()
		sandbox.RemoveCgroup(n.Cgroup(id))
		os.RemoveAll(filepath.Join(n.OneOffs, id))
		if n.Log != nil {
			n.Log.Info("removed a container left by an interrupted build", "container", id)
		}
	}
}
