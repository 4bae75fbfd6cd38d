package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/disk"
)

// DiskSizes are the disk limits of the gear sizes: all an app stores (its
// repository, deployments, data, caches, logs) fits in one.
var DiskSizes = map[string]int64{"small": 1 << 30, "medium": 2 << 30, "large": 4 << 30}

func diskSize(gearSize string) int64 {
	if n, ok := DiskSizes[gearSize]; ok {
		return n
	}
	return DiskSizes["small"]
}

// PrepareAppDir makes the app's directory: its own filesystem of the gear
// size's disk limit (when the platform has disk limits), then the
// directories in it.
func (a *Agent) PrepareAppDir(app *store.App) error {
	dir := a.o.Layout.AppDir(app.ID)
	if a.o.Disks != nil {
		err := a.o.Disks.Ensure(app.ID, dir, diskSize(app.GearSize))
		if errors.Is(err, disk.ErrNotEmpty) {
			a.log.Warn("the app's directory predates disk limits: it has none", "app", app.FullName())
		} else if err != nil {
			return fmt.Errorf("the app's disk: %w", err)
		}
		os.Chmod(dir, 0o711)
	}
	return a.o.Layout.EnsureApp(app.ID)
}

// RemoveAppDir deletes the app's directory and its disk.
func (a *Agent) RemoveAppDir(app *store.App) error {
	dir := a.o.Layout.AppDir(app.ID)
	os.RemoveAll(dir) // the contents; a mount point stays
	if a.o.Disks != nil {
		return a.o.Disks.Remove(app.ID, dir)
	}
	return nil
}

// PurgeCache deletes the app's build cache (npm, pip, Go) and returns the
// bytes it held; the next build fills it again.
func (a *Agent) PurgeCache(app *store.App) (int64, error) {
	dir := a.o.Layout.Cache(app.ID)
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, os.RemoveAll(dir)
}

// DiskUsage is what the app stores and its limit (0: none).
func (a *Agent) DiskUsage(app *store.App) (used, limit int64) {
	dir := a.o.Layout.AppDir(app.ID)
	if a.o.Disks == nil || !disk.Mounted(dir) {
		return 0, 0
	}
	used, limit, _ = disk.Usage(dir)
	return used, limit
}

// mountDisks mounts the apps' disks again after a reboot.
func (a *Agent) mountDisks() {
	if a.o.Disks == nil {
		return
	}
	apps := a.apps()
	for i := range apps {
		if a.o.Disks.Has(apps[i].ID) && !disk.Mounted(a.o.Layout.AppDir(apps[i].ID)) {
			if err := a.o.Disks.Ensure(apps[i].ID, a.o.Layout.AppDir(apps[i].ID), diskSize(apps[i].GearSize)); err != nil {
				a.log.Error("mounting the app's disk", "app", apps[i].FullName(), "err", err)
			}
		}
	}
}
