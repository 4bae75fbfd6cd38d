package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/node/shim"
)

// Recorder is a Driver that runs nothing: it records each call as a line
// of text and keeps a state per gear that a test can change (Crash). With
// OnStart a test makes a started gear answer (a listener on its port).
type Recorder struct {
	OnStart func(gearID string) error

	mu        sync.Mutex
	calls     []string
	states    map[string]*State
	listening map[string][]Socket
	pid       int
}

func (r *Recorder) record(format string, args ...any) {
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

// The network is not recorded: it is the namespaces driver's own.
func (r *Recorder) AddNetwork(...string) error    { return nil }
func (r *Recorder) RemoveNetwork(...string) error { return nil }
func (r *Recorder) SyncNetwork() error            { return nil }
func (r *Recorder) RefreshNetwork() error         { return nil }

// Listening reports the sockets a test set with Listen.
func (r *Recorder) Listening(gearID string) ([]Socket, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listening[gearID], nil
}

// Listen makes a gear report sockets.
func (r *Recorder) Listen(gearID string, socks ...Socket) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listening == nil {
		r.listening = map[string][]Socket{}
	}
	r.listening[gearID] = socks
}

// Dial records the address and connects from the host.
func (r *Recorder) Dial(gearID, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.record("dial %s %s", gearID, addr)
	r.mu.Unlock()
	return net.DialTimeout("tcp", addr, 5*time.Second)
}

// Caps says the recorded gears are host processes.
func (r *Recorder) Caps() Caps { return Caps{} }

// RunOnce records the run.
func (r *Recorder) RunOnce(_ context.Context, net string, sb Sandbox, _ io.Writer, _ time.Duration, args []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("run %s in %s", strings.Join(args, " "), net)
	return nil
}

func (r *Recorder) CleanOneOffs() {}

// Prepare records the gear's command.
func (r *Recorder) Prepare(sb Sandbox, _ *shim.Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("prepare %s %s", sb.ID, sb.Command)
	return nil
}

func (r *Recorder) Start(gearID string) error {
	r.mu.Lock()
	r.record("start %s", gearID)
	if r.states == nil {
		r.states = map[string]*State{}
	}
	r.pid++
	st := r.states[gearID]
	if st == nil {
		st = &State{}
		r.states[gearID] = st
	}
	st.ShimPID, st.PID, st.Status, st.Alive, st.Started = 1000+r.pid, 2000+r.pid, shim.Running, true, time.Now()
	on := r.OnStart
	r.mu.Unlock()
	if on != nil {
		return on(gearID)
	}
	return nil
}

func (r *Recorder) Running(gearID string) bool {
	st, err := r.State(gearID)
	return err == nil && st.Alive
}

func (r *Recorder) State(gearID string) (State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.states[gearID]
	if st == nil {
		return State{}, fmt.Errorf("gear %s has no state", gearID)
	}
	return *st, nil
}

func (r *Recorder) Stop(gearID string, grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("stop %s", gearID)
	if st := r.states[gearID]; st != nil {
		st.Status, st.Alive, st.PID = shim.Stopped, false, 0
	}
}

func (r *Recorder) Release(gearID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("release %s", gearID)
}

// Exec records the command and returns one that runs nothing (true).
func (r *Recorder) Exec(gearID string, _ shim.Spec, args []string, tty bool, _ string) *exec.Cmd {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("exec %s tty=%v %s", gearID, tty, strings.Join(args, " "))
	return exec.Command("true")
}

// Crash makes a gear's supervisor gone, as after a kill -9 or a reboot:
// its state still says running.
func (r *Recorder) Crash(gearID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.states[gearID]; st != nil {
		st.Alive = false
	}
}

// Adopt gives a gear a live supervisor without recording a start, as a
// gear started by a previous server.
func (r *Recorder) Adopt(gearID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.states == nil {
		r.states = map[string]*State{}
	}
	r.states[gearID] = &State{State: shim.State{ShimPID: 1, PID: 2, Status: shim.Running}, Alive: true}
}

// Calls returns the calls recorded since the last Calls, one per line.
func (r *Recorder) Calls() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.Join(r.calls, "\n")
	r.calls = nil
	return s
}
