// Package shim is the per-gear supervisor: a small process, started by the
// agent and independent of it, that runs the gear's web process, captures
// its output to the gear's log file, and restarts it with back-off when it
// exits. Because the shim outlives the server, restarting `gantry server`
// does not touch running apps; the agent re-attaches by reading the state
// file the shim keeps.
//
// The shim owns exactly one child process group. It must not talk to the
// store or the network: everything it needs is in its spec file.
//
// It runs before every gear's app, so it imports only standard packages
// whose initialisation comes early: not os/exec, path/filepath, net or
// x/sys/unix, which would make it wait for most of the binary's (see
// node/helpers; cmd/gantry's TestHelpersRunBeforeTheServersInit checks).
package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
	"github.com/gantry-paas/gantry/internal/node/runtime/gearinit"
)

// Spec is what the agent asks the shim to run. It lives in DIR/spec.json.
type Spec struct {
	GearID  string   `json:"gear_id"`
	Command string   `json:"command"` // run with /bin/sh -c
	Dir     string   `json:"dir"`
	Env     []string `json:"env"`
	LogFile string   `json:"log_file"`
	LogMax  int64    `json:"log_max"`
	// StopGrace is how long the process has to exit after SIGTERM.
	StopGrace time.Duration `json:"stop_grace"`
	// Runtime is "" (a plain process) or "runc" (Command is ignored; the
	// bundle's config.json says what runs).
	Runtime  string `json:"runtime,omitempty"`
	RuncRoot string `json:"runc_root,omitempty"`
	Bundle   string `json:"bundle,omitempty"`
	// CgroupParent holds the gear's limits; OOM kills are counted there.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	MemoryLimit  int64  `json:"memory_limit,omitempty"`
	// UID/GID run a plain process as that user (the server is root).
	UID int `json:"uid,omitempty"`
	GID int `json:"gid,omitempty"`
	// Once runs the command one time (a detached one-off): when it exits
	// the shim records how and stops, without a restart.
	Once bool `json:"once,omitempty"`
}

// State is what the shim reports in DIR/state.json.
type State struct {
	ShimPID int `json:"shim_pid"`
	// ShimStart is the shim's start time in clock ticks since boot, from
	// /proc: with the pid it identifies the shim even after pid reuse.
	ShimStart uint64 `json:"shim_start"`
	PID       int    `json:"pid"`
	// ProcStart is the process's start time (clock ticks since boot).
	ProcStart uint64    `json:"proc_start,omitempty"`
	Status    string    `json:"status"` // running, backoff, stopped
	Restarts  int       `json:"restarts"`
	LastExit  string    `json:"last_exit,omitempty"`
	Started   time.Time `json:"started"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
	NextStart time.Time `json:"next_start,omitzero"`
}

// Shim statuses.
const (
	Running = "running"
	Backoff = "backoff"
	Stopped = "stopped"
)

// File names inside a gear's runtime directory.
const (
	SpecFile  = "spec.json"
	StateFile = "state.json"
)

// Back-off between restarts of a crashing process.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
	// A process that ran this long is healthy again: back-off resets.
	stableAfter = 30 * time.Second
)

// Main runs the shim for the gear directory dir until it is told to stop
// (SIGTERM/SIGINT). It returns the process exit code.
func Main(dir string) int {
	var spec Spec
	data, err := os.ReadFile(dir + "/" + SpecFile)
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "shim: reading spec: %v\n", err)
		return 2
	}
	if spec.StopGrace <= 0 {
		spec.StopGrace = 10 * time.Second
	}
	logw, err := applog.OpenWriter(spec.LogFile, spec.LogMax)
	if err != nil {
		fmt.Fprintf(os.Stderr, "shim: %v\n", err)
		return 2
	}
	defer logw.Close()

	// Descendants that leave the process group (daemons call setsid, as
	// PostgreSQL's workers do) are re-parented to the shim, which kills
	// them when the gear's process ends: a restart starts clean.
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// SIGHUP from a closing session must not stop the gear.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	killOrphans(dir)
	self, _, _ := procStart(os.Getpid())
	st := State{ShimPID: os.Getpid(), ShimStart: self}
	backoff := minBackoff
	for {
		ooms := cgroup.OOMKills(spec.CgroupParent)
		proc, exited, err := start(spec, logw)
		if err != nil {
			logw.WriteLine("gantry", []byte("cannot start: "+err.Error()))
			st.LastExit = "could not start: " + err.Error()
		} else {
			st.PID, st.Status, st.Started = proc.Pid, Running, time.Now().UTC()
			st.ProcStart, _, _ = procStart(st.PID)
			st.NextStart = time.Time{}
			writeState(dir, st)
			select {
			case <-sigs:
				stop(spec, proc, exited)
				st.Status, st.PID = Stopped, 0
				writeState(dir, st)
				return 0
			case werr := <-exited:
				st.LastExit = describeExit(werr)
				if spec.CgroupParent != "" && killed(werr) && cgroup.OOMKills(spec.CgroupParent) > ooms {
					st.LastExit = fmt.Sprintf("killed: out of memory (the gear's limit is %d MiB; a larger --gear-size gives more)", cgroup.MemoryLimit(spec.CgroupParent)>>20)
				}
				if spec.Runtime == "runc" {
					runc(spec, "delete", "-f", spec.GearID) // kept for the count above
				}
				st.ExitedAt = time.Now().UTC()
				if spec.Once {
					st.Status, st.PID = Stopped, 0
					writeState(dir, st)
					logw.WriteLine("gantry", []byte("one-off command "+st.LastExit))
					return 0
				}
				if time.Since(st.Started) > stableAfter {
					backoff = minBackoff
				}
			}
		}
		st.Restarts++
		st.PID, st.Status = 0, Backoff
		st.NextStart = time.Now().Add(backoff).UTC()
		writeState(dir, st)
		logw.WriteLine("gantry", []byte(fmt.Sprintf("process %s; restarting in %s (restart %d)", st.LastExit, backoff, st.Restarts)))
		select {
		case <-sigs:
			st.Status = Stopped
			writeState(dir, st)
			return 0
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// RuncArgs are the arguments of `runc run` for a bundle, with runc's state
// kept under root. The container is kept after it exits (--keep), so that
// its cgroup can be read for OOM kills; the caller deletes it.
func RuncArgs(root, bundle, id string) []string {
	return []string{"runc", "--root", root, "run", "--keep", "--bundle", bundle, id}
}

// exitError is a process's exit other than with status 0.
type exitError struct{ *os.ProcessState }

func (e exitError) Error() string { return e.String() }

func start(spec Spec, logw *applog.Writer) (*os.Process, chan error, error) {
	args := []string{"/bin/sh", "-c", spec.Command}
	attr := &os.ProcAttr{Dir: spec.Dir, Env: spec.Env}
	if spec.Runtime == "runc" {
		// A container left by a shim that died is removed first.
		if _, err := os.Stat(spec.RuncRoot + "/" + spec.GearID); err == nil {
			runc(spec, "delete", "-f", spec.GearID)
		}
		args = RuncArgs(spec.RuncRoot, spec.Bundle, spec.GearID)
		attr.Dir = spec.Bundle
		attr.Env = []string{"PATH=" + gearinit.DefaultPath}
	}
	path, err := gearinit.LookPath(args[0])
	if err != nil {
		return nil, nil, err
	}
	// Own process group, so that stop reaches the whole tree; killed if the
	// shim dies, so that a respawned shim never finds an orphan on its port.
	attr.Sys = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if spec.UID > 0 && spec.Runtime == "" {
		attr.Sys.Credential = &syscall.Credential{Uid: uint32(spec.UID), Gid: uint32(spec.GID)}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, err
	}
	// Our own pipes: the process is waited for by itself, not for the
	// pipes, which a descendant that escaped the group may hold open.
	outR, outW, err := os.Pipe()
	if err != nil {
		devnull.Close()
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		devnull.Close()
		outR.Close()
		outW.Close()
		return nil, nil, err
	}
	attr.Files = []*os.File{devnull, outW, errW}
	proc, err := os.StartProcess(path, args, attr)
	devnull.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, err
	}
	copied := make(chan struct{}, 2)
	go func() { logw.Copy("stdout", outR); copied <- struct{}{} }()
	go func() { logw.Copy("stderr", errR); copied <- struct{}{} }()
	exited := make(chan error, 1)
	go func() {
		err := wait(proc)
		// What is left below the shim goes with the process; then the
		// pipes drain (briefly: a stuck holder must not stall the gear).
		killDescendants()
		for i := 0; i < 2; i++ {
			select {
			case <-copied:
			case <-time.After(2 * time.Second):
			}
		}
		outR.Close()
		errR.Close()
		exited <- err
	}()
	return proc, exited, nil
}

// wait waits for proc: nil if it exited with status 0, an exitError
// otherwise.
func wait(proc *os.Process) error {
	st, err := proc.Wait()
	if err != nil {
		return err
	}
	if !st.Success() {
		return exitError{st}
	}
	return nil
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func stop(spec Spec, proc *os.Process, exited chan error) {
	grace := spec.StopGrace
	if spec.Runtime == "runc" {
		runc(spec, "kill", spec.GearID, "TERM")
		select {
		case <-exited:
		case <-time.After(grace):
			runc(spec, "kill", "--all", spec.GearID, "KILL")
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-proc.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		runc(spec, "delete", "-f", spec.GearID)
		return
	}
	pgid := proc.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	// Children that left the group's leader behind go too.
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// killDescendants kills and reaps every process left below the shim once
// its child has exited.
func killDescendants() {
	self := os.Getpid()
	for round := 0; round < 50; round++ {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// Fields after the command's ")": state, ppid, pgrp…
			i := strings.LastIndexByte(string(data), ')')
			f := strings.Fields(string(data[i+1:]))
			if pid != self && len(f) > 1 && f[1] == strconv.Itoa(self) {
				syscall.Kill(pid, syscall.SIGKILL)
				found = true
			}
		}
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
		if !found {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killOrphans kills the process group a previous shim of this gear left
// behind when it died (its child's children outlive Pdeathsig).
func killOrphans(dir string) {
	old, err := ReadState(dir)
	if err != nil || old.PID <= 0 {
		return
	}
	if start, state, err := procStart(old.PID); err == nil {
		if start != old.ProcStart {
			// The pid was reused: the kernel reuses no pid still used as a
			// process group id, so the old group is gone entirely.
			return
		}
		if state != 'Z' {
			syscall.Kill(-old.PID, syscall.SIGKILL)
		}
	}
	// Group members whose leader is gone: same process group id.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == old.PID && pid != os.Getpid() {
			if start, _, err := procStart(pid); err == nil && start >= old.ProcStart {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// killed reports an exit by SIGKILL, directly or as a shell's or runc's
// status 137.
func killed(err error) bool {
	var ee exitError
	if !errors.As(err, &ee) {
		return false
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal() == syscall.SIGKILL
	}
	return ee.ExitCode() == 128+int(syscall.SIGKILL)
}

// runc runs a runc subcommand for the gear's container.
func runc(spec Spec, args ...string) error {
	path, err := gearinit.LookPath("runc")
	if err != nil {
		return err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	files := []*os.File{devnull, devnull, devnull}
	proc, err := os.StartProcess(path, append([]string{"runc", "--root", spec.RuncRoot}, args...), &os.ProcAttr{Files: files})
	if err != nil {
		return err
	}
	return wait(proc)
}

func describeExit(err error) string {
	var ee exitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		code := ee.ExitCode()
		if code > 128 && code < 128+65 {
			// A shell reports a child killed by signal N as 128+N.
			return fmt.Sprintf("exited with status %d (killed by signal %s)", code, syscall.Signal(code-128))
		}
		return "exited with status " + strconv.Itoa(code)
	}
	if err != nil {
		return err.Error()
	}
	return "exited with status 0"
}

func writeState(dir string, st State) {
	data, _ := json.Marshal(st)
	tmp := dir + "/" + StateFile + ".tmp"
	if os.WriteFile(tmp, data, 0o644) == nil {
		os.Rename(tmp, dir+"/"+StateFile)
	}
}

// ReadState reads the state a shim wrote in dir.
func ReadState(dir string) (State, error) {
	var st State
	data, err := os.ReadFile(dir + "/" + StateFile)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(data, &st)
}

// Alive reports whether the shim that wrote st is still running: a live
// (not zombie) process with its pid and start time.
func Alive(dir string, st State) bool {
	if st.ShimPID <= 0 {
		return false
	}
	start, state, err := procStart(st.ShimPID)
	return err == nil && state != 'Z' && state != 'X' && start == st.ShimStart
}

// procStart reads a process's start time (field 22) and state (field 3)
// from /proc/PID/stat.
func procStart(pid int) (uint64, byte, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, f[0][0], err
}
