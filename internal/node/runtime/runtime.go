// Package runtime starts, watches and stops the supervisors of gears on
// one machine: the seam between the agent, which decides what runs, and the
// host (processes, runc, cgroups). Process and Namespaces are the real
// drivers (a gear's written spec says whether its process runs under
// runc); Recorder is a fake that records what it was asked, for the
// agent's unit tests. Sandbox (OCI bundles, cgroups), netplan (the gear
// network) and gearinit (PID 1 in a container) are the namespaces driver's
// pieces, in the packages below this one.
package runtime

import (
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// State is what a driver knows of a gear's supervisor: the shim's own state
// file, and whether the supervisor runs now.
type State struct {
	shim.State
	Alive bool
}

// Driver runs gears' supervisors.
type Driver interface {
	// Start starts the supervisor of a gear whose spec (shim.SpecFile) is
	// written in its directory. The supervisor survives the server.
	Start(gearID string) error
	// State reads a gear's supervisor state; an error if it never wrote one.
	State(gearID string) (State, error)
	// Stop stops a gear's supervisor and so its processes: SIGTERM, then
	// SIGKILL after grace. A gear not running is left as it is.
	Stop(gearID string, grace time.Duration)
	// Release frees what a stopped gear still holds besides its directory
	// (its cgroup under runc).
	Release(gearID string)
	// Exec prepares args to run beside a running gear's process, as it
	// runs: its user, environment and working directory (spec), inside
	// its namespaces under runc. tty asks for a terminal (term: its
	// TERM), which the caller attaches.
	Exec(gearID string, spec shim.Spec, args []string, tty bool, term string) *exec.Cmd
}

// Process runs each gear's supervisor as `EXE shim DIR` in a session of
// its own: the gear's process is a plain host process.
type Process struct {
	Exe string
	// Dir is a gear's runtime directory (spec, state).
	Dir func(gearID string) string
}

func (p *Process) Start(gearID string) error {
	dir := p.Dir(gearID)
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(p.Exe, "shim", dir)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Reap it if it exits while we run; after a server restart init does.
	go cmd.Wait()
	return nil
}

func (p *Process) State(gearID string) (State, error) {
	dir := p.Dir(gearID)
	st, err := shim.ReadState(dir)
	if err != nil {
		return State{}, err
	}
	return State{State: st, Alive: shim.Alive(dir, st)}, nil
}

func (p *Process) Stop(gearID string, grace time.Duration) {
	dir := p.Dir(gearID)
	st, err := shim.ReadState(dir)
	if err != nil || !shim.Alive(dir, st) {
		return
	}
	syscall.Kill(st.ShimPID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for shim.Alive(dir, st) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if shim.Alive(dir, st) {
		syscall.Kill(st.ShimPID, syscall.SIGKILL)
	}
}

func (p *Process) Release(string) {}

func (p *Process) Exec(_ string, spec shim.Spec, args []string, _ bool, term string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Env = spec.Dir, spec.Env
	if term != "" {
		cmd.Env = append(cmd.Env, "TERM="+term)
	}
	return cmd
}

// Namespaces runs gears under runc (the shim runs `runc run` with the
// bundle the agent prepared), each in its own cgroup.
type Namespaces struct {
	Process
	// Cgroup is a gear's cgroup path; RuncRoot runc's state directory.
	Cgroup   func(gearID string) string
	RuncRoot string
}

func (n *Namespaces) Release(gearID string) { sandbox.RemoveCgroup(n.Cgroup(gearID)) }

func (n *Namespaces) Exec(gearID string, spec shim.Spec, args []string, tty bool, term string) *exec.Cmd {
	rargs := []string{"--root", n.RuncRoot, "exec", "--cwd", spec.Dir}
	if tty {
		if term == "" {
			term = "xterm"
		}
		rargs = append(rargs, "--tty", "--env", "TERM="+term)
	}
	rargs = append(rargs, gearID)
	return exec.Command("runc", append(rargs, args...)...)
}
