package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// oneOffCommand keeps a one-off gear alive while commands run in it.
const oneOffCommand = "exec sleep 2147483647"

// StartOneOff starts a fresh gear of the app's active deployment on this
// machine for a command (`gantry run`): the app's code, env (its
// cartridges' too), isolation and egress policy, no hooks, never routed.
// The caller runs the command in it (ExecCommand with its ID) and calls
// done, which stops and removes it.
func (a *Agent) StartOneOff(ctx context.Context, appKey string) (gearID string, done func(), err error) {
	return a.startOneOff(ctx, appKey, "", "", "")
}

// startOneOff starts a one-off gear of a deployment ("": the active one)
// that idles (command "") or runs the command once (detached). kind is
// what it is for: "" (gantry run), cron or release.
func (a *Agent) startOneOff(ctx context.Context, appKey, depID, command, kind string) (gearID string, done func(), err error) {
	if a.o.Gearless {
		return "", nil, a.errGearless()
	}
	var app store.App
	var dep store.Deployment
	// "run" then hex: its log lines say what it was after it is gone.
	g := store.Gear{ID: "run" + newID()[:9], AppKey: appKey, State: store.GearOneOff, Process: kind, Isolation: a.o.Isolation, Node: a.o.Node, Created: time.Now().UTC()}
	err = a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		if depID == "" {
			depID = app.ActiveDeployment
		}
		if depID == "" {
			return fmt.Errorf("%s has nothing deployed yet: push code first", app.FullName())
		}
		if err := tx.Get(store.DeploymentKey(app.ID, depID), &dep); err != nil {
			return err
		}
		if dep.Image != nil {
			return fmt.Errorf("%s runs the image %s: one-off runs, release commands and cron jobs of images are not supported yet (gantry ssh runs a command in a running gear)", app.FullName(), dep.Image.Ref)
		}
		g.AppID, g.Deployment = app.ID, dep.ID
		if a.rt.Caps().Isolated {
			if err := a.ensureUID(tx, &app); err != nil {
				return err
			}
		}
		if err := a.localAddress(tx, &g, GearPort); err != nil {
			return err
		}
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if err != nil {
		return "", nil, err
	}
	done = func() {
		a.stopGear(context.WithoutCancel(ctx), g, io.Discard)
		a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
		a.netRemove(g.ID)
		if command == "" {
			// Its process only slept: the command's output went to the
			// caller (or the job's log).
			os.Remove(a.logFile(&g))
		}
	}
	unlock := a.dirLocks.Lock(app.ID)
	err = a.PrepareAppDir(&app)
	dir := dep.Dir // built here
	if _, serr := os.Stat(dir); err == nil && serr != nil {
		dir, err = a.ensureDeployment(ctx, &dep) // built on another machine
	}
	unlock()
	if err != nil {
		done()
		return "", nil, fmt.Errorf("the deployment's files: %w", err)
	}
	idle := dep
	idle.Command, idle.Dir = oneOffCommand, dir
	if command != "" {
		idle.Command = command // detached: it runs once, by itself
	}
	if err := a.startOne(ctx, &app, &idle, &g, io.Discard); err != nil {
		done()
		return "", nil, err
	}
	if command != "" {
		return g.ID, done, nil // it runs by itself
	}
	// A command can go in once the gear's process runs.
	for deadline := time.Now().Add(a.o.StartTimeout); !a.driverFor(g).Running(g.ID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			done()
			return "", nil, fmt.Errorf("the one-off gear did not start within %s: %s", a.o.StartTimeout, a.logTail(&g, 5))
		}
	}
	return g.ID, done, nil
}

// errGearless refuses a gear on a machine without the node role.
func (a *Agent) errGearless() error {
	return fmt.Errorf("this machine (%s) runs no gears (its --roles has no node): ask a control machine that is also a node", a.o.Node)
}

// localAddress gives a gear of this machine its address: its own IP with
// port when isolated, else a free port on this machine's address.
func (a *Agent) localAddress(tx *store.Tx, g *store.Gear, port int) error {
	if a.rt.Caps().Isolated {
		ip, err := a.allocIP(tx, map[netip.Addr]bool{}, a.o.Node)
		if err != nil {
			return err
		}
		g.IP, g.Port = ip, port
		return nil
	}
	p, err := a.allocPort(tx, map[int]bool{}, true)
	if err != nil {
		return err
	}
	g.IP, g.Port = a.o.IP, p
	return nil
}

// RunDetached runs command in a fresh one-off gear of the app in the
// background: its output goes to the app's logs, and the gear is removed
// once the command ends (supervise reaps it). It returns the gear's ID.
func (a *Agent) RunDetached(ctx context.Context, appKey, command string) (string, error) {
	if strings.TrimSpace(command) == "" {
		return "", fmt.Errorf("a detached run needs a command")
	}
	id, done, err := a.startOneOff(ctx, appKey, "", command, "")
	if err != nil {
		return "", err
	}
	_ = done // supervise removes it when the command ends
	return id, nil
}

// reapOneOff removes a detached one-off gear whose command ended, or any
// one-off whose supervisor is gone.
func (a *Agent) reapOneOff(ctx context.Context, g store.Gear) {
	st, err := a.rt.State(g.ID)
	if err == nil && st.Alive {
		return
	}
	if err != nil && time.Since(g.Created) < a.o.StartTimeout {
		return // starting
	}
	if err == nil {
		a.log.Info("one-off run ended", "gear", g.ID, "app", g.AppKey, "exit", st.LastExit)
	}
	a.stopGear(ctx, g, io.Discard)
	a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
	a.netRemove(g.ID)
}

// RunCommand runs command in a one-off gear of the app: attached, its
// output to out and its exit code back; detached, at once (RunDetached).
func (a *Agent) RunCommand(ctx context.Context, appKey, command string, detach bool, out io.Writer) (string, int, error) {
	if detach {
		id, err := a.RunDetached(ctx, appKey, command)
		return id, 0, err
	}
	return a.runAttached(ctx, appKey, "", command, "", out)
}

// Release runs a deployment's release command (before it goes live) in a
// one-off gear of it. Its output goes to out (the push) and to the app's
// logs as release/DEPLOYMENT.
func (a *Agent) Release(ctx context.Context, appKey, depID, command string, out io.Writer) (int, error) {
	var app store.App
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(appKey, &app) }); err != nil {
		return 0, err
	}
	dir := a.o.Layout.Logs(app.ID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, err
	}
	w, err := applog.OpenWriter(filepath.Join(dir, applog.FileName(depID, "release")), 10<<20)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	lines := &lineWriter{w: w, stream: "stdout"}
	defer lines.Flush()
	w.WriteLine("gantry", []byte("release of deployment "+depID+": "+command))
	_, code, err := a.runAttached(ctx, appKey, depID, command, "release", io.MultiWriter(out, lines))
	lines.Flush()
	if err == nil {
		w.WriteLine("gantry", []byte(fmt.Sprintf("release exited with status %d", code)))
	}
	return code, err
}

// lineWriter writes what it is given to a log, a line at a time.
type lineWriter struct {
	w      *applog.Writer
	stream string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.w.WriteLine(l.stream, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > applog.MaxLine {
		l.Flush()
	}
	return len(p), nil
}

// Flush writes a last line without its newline.
func (l *lineWriter) Flush() {
	if len(l.buf) > 0 {
		l.w.WriteLine(l.stream, l.buf)
		l.buf = l.buf[:0]
	}
}

// RunJob runs a cron job's command in a one-off gear of the app's active
// deployment on this machine. Its output goes to the job's log
// (JOB.cron.log: the app's logs show it as cron/JOB), between a line
// that says where it runs and one with its exit status.
func (a *Agent) RunJob(ctx context.Context, appKey, jobID, command string) (string, int, error) {
	var app store.App
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(appKey, &app) }); err != nil {
		return "", 0, err
	}
	w, err := a.JobLog(app.ID, jobID)
	if err != nil {
		return "", 0, err
	}
	defer w.Close()
	started := time.Now()
	id, code, err := a.runJob(ctx, appKey, jobID, command, w)
	switch {
	case err != nil:
		w.WriteLine("gantry", []byte(fmt.Sprintf("cron job %s could not run: %v", jobID, err)))
	default:
		w.WriteLine("gantry", []byte(fmt.Sprintf("cron job %s exited with status %d after %s", jobID, code, time.Since(started).Round(time.Millisecond))))
	}
	return id, code, err
}

// JobLog opens (appending) the log of an app's cron job.
func (a *Agent) JobLog(appID, jobID string) (*applog.Writer, error) {
	dir := a.o.Layout.Logs(appID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return applog.OpenWriter(filepath.Join(dir, applog.FileName(jobID, "cron")), 10<<20)
}

func (a *Agent) runJob(ctx context.Context, appKey, jobID, command string, w *applog.Writer) (string, int, error) {
	id, done, err := a.startOneOff(ctx, appKey, "", "", "cron")
	if err != nil {
		return "", 0, err
	}
	defer done()
	w.WriteLine("gantry", []byte(fmt.Sprintf("cron job %s started in gear %s: %s", jobID, id, command)))
	cmd, _, err := a.ExecCommand(appKey, id, command, false, "")
	if err != nil {
		return id, 0, err
	}
	stdout, err1 := cmd.StdoutPipe()
	stderr, err2 := cmd.StderrPipe()
	if err := errors.Join(err1, err2); err != nil {
		return id, 0, err
	}
	if err := cmd.Start(); err != nil {
		return id, 0, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Copy("stdout", stdout) }()
	go func() { defer wg.Done(); w.Copy("stderr", stderr) }()
	wg.Wait() // all output read before Wait closes the pipes
	code, err := exitCode(cmd.Wait())
	return id, code, err
}

// runAttached runs command in a one-off gear of a deployment ("": the
// active one), its output to out, and returns its exit code.
func (a *Agent) runAttached(ctx context.Context, appKey, depID, command, kind string, out io.Writer) (string, int, error) {
	id, done, err := a.startOneOff(ctx, appKey, depID, "", kind)
	if err != nil {
		return "", 0, err
	}
	defer done()
	cmd, _, err := a.ExecCommand(appKey, id, command, false, "")
	if err != nil {
		return id, 0, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	code, err := exitCode(cmd.Run())
	return id, code, err
}

// exitCode is a finished command's exit status, or the error that kept
// it from running.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	case err != nil:
		return 0, err
	}
	return 0, nil
}
