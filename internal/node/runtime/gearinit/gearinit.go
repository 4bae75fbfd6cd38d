// Package gearinit is PID 1 inside a namespaced gear (`gantry gear-init --
// CMD...`), as tini is for containers: the kernel ignores signals that PID 1
// does not handle, and orphans are re-parented to it. It starts the command
// in its own process group, forwards every signal to that group, reaps all
// children, and exits with the command's status.
package gearinit

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// Main runs args as the gear's process and returns its exit code.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "gear-init: no command")
		return 2
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTTIN)
	path := args[0]
	if p, err := lookPath(path); err == nil {
		path = p
	}
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "gear-init: starting %s: %v\n", args[0], err)
		return 127
	}
	exit := make(chan int, 1)
	go func() {
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return
			}
			if wpid == pid {
				if ws.Signaled() {
					exit <- 128 + int(ws.Signal())
				} else {
					exit <- ws.ExitStatus()
				}
				return
			}
		}
	}()
	for {
		select {
		case code := <-exit:
			return code
		case s := <-sigs:
			if s == syscall.SIGCHLD || s == syscall.SIGURG {
				continue
			}
			if sig, ok := s.(syscall.Signal); ok {
				syscall.Kill(-pid, sig)
			}
		}
	}
}

func lookPath(file string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	// The gear's PATH (its environment's: /usr/local/go/bin for Go, the
	// app's node_modules/.bin…), then the usual places.
	if p, err := exec.LookPath(file); err == nil && filepath.IsAbs(p) {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		p := dir + "/" + file
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}
