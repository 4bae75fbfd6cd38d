package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/peer"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// ExecCommand prepares a command (a shell when command is "") inside one
// of the app's running gears (gearID, or the first one), as the gear's
// user, with its environment and working directory: `runc exec` into a
// namespaced gear, a host process beside a plain one. tty asks for a
// terminal, which the caller attaches.
func (a *Agent) ExecCommand(appKey, gearID, command string, tty bool, term string) (*exec.Cmd, string, error) {
	var gears []store.Gear
	if err := a.o.Store.View(func(tx *store.Tx) error {
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.AppKey == appKey && (g.State == store.GearRunning || g.State == store.GearOneOff && g.ID == gearID) && (g.ID == gearID || gearID == "" && g.Web()) {
				gears = append(gears, g)
			}
		}
		return err
	}); err != nil {
		return nil, "", err
	}
	if len(gears) == 0 {
		if gearID != "" {
			return nil, "", fmt.Errorf("the app has no running gear %s: see `gantry app show`", gearID)
		}
		return nil, "", fmt.Errorf("the app has no running gear: start it with `gantry app start`")
	}
	// This machine's gears first: a shell reaches gears of this machine
	// only, for now.
	sort.Slice(gears, func(i, j int) bool {
		if ri, rj := a.remote(gears[i]), a.remote(gears[j]); ri != rj {
			return !ri
		}
		return gears[i].Created.Before(gears[j].Created)
	})
	g := gears[0]
	if a.remote(g) {
		return nil, g.ID, &ElsewhereError{GearID: g.ID, Node: g.Node}
	}
	cmd, err := a.execIn(g, command, tty, term)
	return cmd, g.ID, err
}

// ElsewhereError is ExecCommand's answer for a gear of another machine:
// ExecRemote runs the command there.
type ElsewhereError struct{ GearID, Node string }

// Elsewhere names the gear's machine.
func (e *ElsewhereError) Elsewhere() string { return e.Node }

func (e *ElsewhereError) Error() string {
	return fmt.Sprintf("gear %s runs on machine %s", e.GearID, e.Node)
}

// ExecGear prepares a command in a gear of this machine (for another
// machine's ExecRemote).
func (a *Agent) ExecGear(gearID, command string, tty bool, term string) (*exec.Cmd, error) {
	var g store.Gear
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }); err != nil {
		return nil, fmt.Errorf("gear %s: %w", gearID, err)
	}
	if a.remote(g) || g.State != store.GearRunning {
		return nil, fmt.Errorf("gear %s does not run on this machine (%s)", gearID, a.o.Node)
	}
	return a.execIn(g, command, tty, term)
}

// ExecRemote runs a command in a gear of another machine, relaying the
// streams, and returns its exit code.
func (a *Agent) ExecRemote(ctx context.Context, gearID string, req peer.ExecRequest, stdio peer.ExecIO) (int, error) {
	var g store.Gear
	if err := a.o.Store.View(func(tx *store.Tx) error { return tx.Get(store.GearKey(gearID), &g) }); err != nil {
		return 0, fmt.Errorf("gear %s: %w", gearID, err)
	}
	if a.o.Peers == nil || !a.remote(g) {
		return 0, fmt.Errorf("gear %s is not on another machine", gearID)
	}
	addr, err := a.peerAddr(g.Node)
	if err != nil {
		return 0, err
	}
	return a.o.Peers.ExecGear(ctx, addr, gearID, req, stdio)
}

// execIn prepares the command in a gear of this machine.
func (a *Agent) execIn(g store.Gear, command string, tty bool, term string) (*exec.Cmd, error) {
	var spec shim.Spec
	data, err := os.ReadFile(filepath.Join(a.o.Layout.Gear(g.ID), shim.SpecFile))
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		return nil, fmt.Errorf("reading gear %s: %w", g.ID, err)
	}
	args := []string{"/bin/sh", "-l"}
	if _, err := os.Stat("/bin/bash"); err == nil {
		args = []string{"/bin/bash", "-l"}
	}
	if command != "" {
		args = []string{"/bin/sh", "-c", command}
	}
	return a.driverFor(g).Exec(g.ID, spec, args, tty, term), nil
}
