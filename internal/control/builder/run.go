package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// RunCommand runs args in dir with env, streaming stdout and stderr to out,
// and kills the whole process group when ctx ends or timeout passes.
func RunCommand(ctx context.Context, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%s did not finish within %s", filepath.Base(args[0]), timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s exited with status %d", filepath.Base(args[0]), ee.ExitCode())
	}
	var pe *os.PathError
	if errors.As(err, &pe) && errors.Is(err, syscall.ENOEXEC) {
		return fmt.Errorf("%s is not a program: start the file with a #! line such as #!/bin/sh", args[0])
	}
	return err
}
