package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/gantry-paas/gantry/internal/control/store"
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
			if g.AppKey == appKey && g.State == store.GearRunning && (g.ID == gearID || gearID == "" && g.Service == "") {
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
		return nil, "", fmt.Errorf("gear %s runs on machine %s: a shell reaches the gears of the machine the CLI talks to; point the CLI at %s (gantry login --server) or pick a gear of this machine (%s) with --gear", g.ID, g.Node, g.Node, a.o.Node)
	}
	var spec shim.Spec
	data, err := os.ReadFile(filepath.Join(a.o.Layout.Gear(g.ID), shim.SpecFile))
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading gear %s: %w", g.ID, err)
	}
	args := []string{"/bin/sh", "-l"}
	if _, err := os.Stat("/bin/bash"); err == nil {
		args = []string{"/bin/bash", "-l"}
	}
	if command != "" {
		args = []string{"/bin/sh", "-c", command}
	}
	return a.driverFor(g).Exec(g.ID, spec, args, tty, term), g.ID, nil
}
