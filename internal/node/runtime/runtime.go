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
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"

	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// State is what a driver knows of a gear's supervisor: the shim's own state
// file, and whether the supervisor runs now.
type State struct {
	shim.State
	Alive bool
}

// Sandbox is what a gear is made of, for its driver to prepare: the
// command (run with /bin/sh -c), its directory, environment and user, and
// for an isolated gear its host name, the host paths it sees (at the same
// paths) and its limits.
type Sandbox struct {
	ID       string
	Command  string
	Cwd      string
	Env      []string
	UID      int
	Hostname string
	Mounts   []sandbox.Mount
	Limits   sandbox.Limits
	// An isolated gear's user owns Private (0700) and Tree (the deployment,
	// recursively) and may traverse Traverse (root's, group UID, 0710).
	Private, Traverse []string
	Tree              string
	// LimitName says which memory limit applies and how to raise it, for
	// the message when a one-off run is killed for memory.
	LimitName string
	// Image, when set, runs an image's filesystem instead of the host's
	// programs (namespaced gears only).
	Image *ImageRun
}

// ImageRun is a gear of an image: its unpacked root filesystem (shared by
// the deployment's gears, each with a writable layer of its own), the
// command it runs as PID 1 and the image's user, mapped onto the app's.
type ImageRun struct {
	Rootfs string
	Args   []string
	UID    int
}

// ErrImageNeedsNamespaces refuses an image on a machine without
// namespaced gears.
var ErrImageNeedsNamespaces = errors.New("images run only in namespaced gears: start the server as root with --isolation namespaces")

// Caps are what a driver gives gears.
type Caps struct {
	// Isolated: each gear has a network namespace with an address of its
	// own, its app's Unix user, cgroup limits (namespaces); otherwise gears
	// are host processes on host ports.
	Isolated bool
}

// Driver runs gears' supervisors.
type Driver interface {
	Caps() Caps
	// Prepare makes what the gear needs before its supervisor starts and
	// fills the runtime part of its spec.
	Prepare(sb Sandbox, spec *shim.Spec) error
	// Start starts the supervisor of a gear whose spec (shim.SpecFile) is
	// written in its directory. The supervisor survives the server.
	Start(gearID string) error
	// State reads a gear's supervisor state; an error if it never wrote one.
	State(gearID string) (State, error)
	// Running says whether the gear's process runs now, so that a command
	// may be run in it (Exec): under runc, once the container is started.
	Running(gearID string) bool
	// Stop stops a gear's supervisor and so its processes: SIGTERM, then
	// SIGKILL after grace. A gear not running is left as it is.
	Stop(gearID string, grace time.Duration)
	// Release frees what a stopped gear still holds besides its directory
	// (its cgroup under runc).
	Release(gearID string)
	// AddNetwork gives new gears their network (the hot path of a start);
	// RemoveNetwork takes removed gears' away; SyncNetwork reconciles the
	// whole network with the gears there should be (at start, and when the
	// incremental path is in doubt); RefreshNetwork applies the rules as
	// they are now (host ports that come and go). No-ops without network
	// namespaces.
	AddNetwork(ids ...string) error
	RemoveNetwork(ids ...string) error
	SyncNetwork() error
	RefreshNetwork() error
	// Listening lists the TCP sockets listening in a running gear: its
	// network namespace's, or a plain gear's own processes'.
	Listening(gearID string) ([]Socket, error)
	// Dial connects to addr as the gear sees it (from inside its network
	// namespace, loopback included).
	Dial(gearID, addr string) (net.Conn, error)
	// RunOnce runs args once, like a gear of sb (its user, directories,
	// limits) in the network of gear net (a running gear, or a building
	// gear's), streaming output to out; timeout 0 is none.
	RunOnce(ctx context.Context, net string, sb Sandbox, out io.Writer, timeout time.Duration, args []string) error
	// CleanOneOffs removes what one-off runs a killed server left.
	CleanOneOffs()
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
	// RunHost runs a command on the host in dir, streaming to out.
	RunHost func(ctx context.Context, dir string, env []string, out io.Writer, timeout time.Duration, args ...string) error
}

func (p *Process) Caps() Caps { return Caps{} }

// RunOnce runs args on the host, in the sandbox's directory.
func (p *Process) RunOnce(ctx context.Context, _ string, sb Sandbox, out io.Writer, timeout time.Duration, args []string) error {
	return p.RunHost(ctx, sb.Cwd, sb.Env, out, timeout, args...)
}

func (p *Process) CleanOneOffs() {}

func (p *Process) AddNetwork(...string) error    { return nil }
func (p *Process) RemoveNetwork(...string) error { return nil }
func (p *Process) SyncNetwork() error            { return nil }
func (p *Process) RefreshNetwork() error         { return nil }

// Prepare has nothing to make: the gear is a host process.
func (p *Process) Prepare(sb Sandbox, _ *shim.Spec) error {
	if sb.Image != nil {
		return ErrImageNeedsNamespaces
	}
	return nil
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

func (p *Process) Running(gearID string) bool {
	st, err := p.State(gearID)
	return err == nil && st.Alive && st.PID > 0 && st.Status == shim.Running
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
	// Plan is the network there should be (netplan: the bridge, every
	// namespaced gear with its address, the host ports gears reach);
	// Netns is a gear's namespace path.
	Plan  func() (netplan.Plan, error)
	Netns func(gearID string) string
	Log   *slog.Logger
	// Init is the binary run as the container's PID 1 (`EXE gear-init`);
	// ResolvConf the resolv.conf gears see ("": the host's); OneOffs the
	// directory of one-off runs' bundles.
	Init       string
	ResolvConf string
	OneOffs    string

	netMu   sync.Mutex    // serialises network changes
	applied netplan.State // what the kernel has, guarded by netMu
	gated   sync.Map      // gear ID -> true: prepared, its network to finish in Start
}

// Gate is a driver that can start a gear's supervisor before the gear's
// network is finished: its app waits for Connect (a namespaced gear's
// address). What must be in place before the app runs (its outbound
// policy) goes between the two, while the container is made.
type Gate interface {
	// Gated says whether a prepared gear waits for Connect.
	Gated(gearID string) bool
	// Launch starts the supervisor of a prepared gear.
	Launch(gearID string) error
	// Connect finishes a gated gear's network; its app starts then.
	Connect(gearID string) error
}

// Start starts the gear's supervisor, then finishes the network of a gear
// prepared without it: runc makes the container meanwhile, and the app
// starts once the address is given (last, after the rules).
func (n *Namespaces) Start(gearID string) error {
	if err := n.Launch(gearID); err != nil {
		return err
	}
	return n.Connect(gearID)
}

func (n *Namespaces) Gated(gearID string) bool {
	_, ok := n.gated.Load(gearID)
	return ok
}

func (n *Namespaces) Launch(gearID string) error { return n.Process.Start(gearID) }

func (n *Namespaces) Connect(gearID string) error {
	if _, ok := n.gated.LoadAndDelete(gearID); ok {
		if err := n.AddNetwork(gearID); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	return nil
}

func (n *Namespaces) Caps() Caps { return Caps{Isolated: true} }

// Running asks runc whether the gear's container is started.
func (n *Namespaces) Running(gearID string) bool {
	out, err := exec.Command("runc", "--root", n.RuncRoot, "state", gearID).Output()
	if err != nil {
		return false
	}
	var st struct{ Status string }
	return json.Unmarshal(out, &st) == nil && st.Status == "running"
}

// network runs f on the plan, one change at a time.
func (n *Namespaces) network(f func(netplan.Plan) ([]string, error)) error {
	n.netMu.Lock()
	defer n.netMu.Unlock()
	p, err := n.Plan()
	if err != nil {
		return err
	}
	changes, err := f(p)
	if n.Log != nil {
		for _, c := range changes {
			n.Log.Debug("network", "change", c)
		}
	}
	return err
}

func (n *Namespaces) AddNetwork(ids ...string) error {
	return n.network(func(p netplan.Plan) ([]string, error) { return netplan.Apply(p, ids, &n.applied) })
}

func (n *Namespaces) RemoveNetwork(ids ...string) error {
	return n.network(func(p netplan.Plan) ([]string, error) {
		if err := netplan.RemoveGears(p, ids); err != nil {
			return nil, err
		}
		return netplan.Apply(p, nil, &n.applied)
	})
}

func (n *Namespaces) SyncNetwork() error {
	return n.network(func(p netplan.Plan) ([]string, error) {
		changes, err := netplan.Reconcile(p)
		n.applied = netplan.State{} // Reconcile asked the kernel; the next Apply re-checks once
		return changes, err
	})
}

func (n *Namespaces) RefreshNetwork() error {
	return n.network(func(p netplan.Plan) ([]string, error) { return netplan.Apply(p, nil, &n.applied) })
}

// Prepare gives the gear a cgroup with its limits and an OCI bundle, and
// points the spec at runc. Its network: a gear of the host's programs
// gets an empty namespace here and the rest (link, rules, address) in
// Start, while runc makes its container: its PID 1 waits for the address
// (gear-init --wait-addr), which comes last. An image's command is PID 1
// itself: its network is made whole here.
func (n *Namespaces) Prepare(sb Sandbox, spec *shim.Spec) error {
	var gate netip.Addr
	if sb.Image == nil {
		n.netMu.Lock()
		p, err := n.Plan()
		for _, g := range p.Gears {
			if g.ID == sb.ID {
				gate = g.IP
			}
		}
		if err == nil && gate.IsValid() {
			err = netplan.EnsureNetns(p, sb.ID)
		}
		n.netMu.Unlock()
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	if gate.IsValid() {
		n.gated.Store(sb.ID, true)
	} else if err := n.AddNetwork(sb.ID); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := own(sb); err != nil {
		return fmt.Errorf("directories: %w", err)
	}
	if err := sandbox.SetLimits(n.Cgroup(sb.ID), sb.Limits); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	bundle := filepath.Join(n.Dir(sb.ID), "bundle")
	ss := sandbox.Spec{
		ID: sb.ID, Env: sb.Env, Cwd: sb.Cwd, UID: uint32(sb.UID), GID: uint32(sb.UID),
		Hostname: sb.Hostname, ResolvConf: n.ResolvConf, Mounts: sb.Mounts,
		Args:      []string{n.Init, "gear-init", "--", "/bin/sh", "-c", sb.Command},
		NetnsPath: n.Netns(sb.ID), CgroupParent: n.Cgroup(sb.ID),
	}
	if sb.Image != nil {
		// The image's command is PID 1, as in Docker without --init. In
		// its user namespace runc mounts as the app's user: the root and
		// what is bound into it must be reachable by that user, so the
		// gear's filesystem lives under /run (0711), with its own copy of
		// resolv.conf.
		dir := n.imageDir(sb.ID)
		merged, err := sandbox.MountOverlay(sb.Image.Rootfs, dir, sb.UID)
		if err != nil {
			return err
		}
		ss.Rootfs, ss.ImageUID, ss.Args = merged, uint32(sb.Image.UID), sb.Image.Args
		if n.ResolvConf != "" {
			data, err := os.ReadFile(n.ResolvConf)
			if err != nil {
				return err
			}
			ss.ResolvConf = filepath.Join(dir, "resolv.conf")
			if err := os.WriteFile(ss.ResolvConf, data, 0o644); err != nil {
				return err
			}
		}
	}
	if gate.IsValid() {
		ss.Args = append([]string{n.Init, "gear-init", "--wait-addr", gate.String()}, ss.Args[2:]...)
	}
	if err := sandbox.WriteBundle(bundle, ss); err != nil {
		return err
	}
	spec.Runtime, spec.RuncRoot, spec.Bundle = "runc", n.RuncRoot, bundle
	spec.CgroupParent, spec.MemoryLimit = n.Cgroup(sb.ID), sb.Limits.MemoryBytes
	return nil
}

func (n *Namespaces) Release(gearID string) {
	n.gated.Delete(gearID) // a start that failed between Prepare and Connect
	sandbox.RemoveCgroup(n.Cgroup(gearID))
	dir := n.imageDir(gearID)
	sandbox.UnmountOverlay(dir)
	os.RemoveAll(dir)
}

// imageDir is where an image gear's filesystem is mounted: under /run,
// traversable by every user, one directory per server (by its runc
// state directory, so that several servers on one host stay apart).
func (n *Namespaces) imageDir(gearID string) string {
	h := sha256.Sum256([]byte(n.RuncRoot))
	base := filepath.Join("/run/gantry", hex.EncodeToString(h[:4]))
	os.MkdirAll(base, 0o711)
	os.Chmod("/run/gantry", 0o711)
	os.Chmod(base, 0o711)
	return filepath.Join(base, gearID)
}

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

// own gives the gear's user its directories: Private (0700, so no other
// gear can read them), Traverse (root's, the user's group, 0710) and the
// deployment tree.
func own(sb Sandbox) error {
	uid := sb.UID
	for _, d := range sb.Private {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, uid, uid); err != nil {
			return err
		}
		os.Chmod(d, 0o700)
	}
	for _, d := range sb.Traverse {
		os.Chown(d, 0, uid)
		os.Chmod(d, 0o710)
	}
	if sb.Tree == "" {
		return nil
	}
	if fi, err := os.Stat(sb.Tree); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
			return nil // already given
		}
	}
	return filepath.WalkDir(sb.Tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
}
