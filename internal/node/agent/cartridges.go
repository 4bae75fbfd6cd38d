package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/node/cartridge"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

// AddCartridge starts an add-on service of the app in a gear of its own:
// the app's user and isolation, its data under the app's data directory
// (kept across restarts), not routed, not scaled, not replaced by deploys.
func (a *Agent) AddCartridge(ctx context.Context, appKey string, c store.Cartridge) (*store.Gear, error) {
	if a.o.Gearless {
		return nil, a.errGearless()
	}
	unlock := a.appLock(appKey)
	defer unlock()
	var app store.App
	g := store.Gear{ID: newID(), AppKey: appKey, Service: c.Name, State: store.GearRunning, Isolation: a.o.Isolation, Node: a.o.Node, Created: time.Now().UTC()}
	err := a.o.Store.Update(func(tx *store.Tx) error {
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		g.AppID = app.ID
		if a.rt.Caps().Isolated || os.Geteuid() == 0 {
			if err := a.ensureUID(tx, &app); err != nil {
				return err
			}
		}
		if err := a.localAddress(tx, &g, cartridge.DefaultPort(c.Name)); err != nil {
			return err
		}
		return tx.Create(store.GearKey(g.ID), &g)
	})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*store.Gear, error) {
		a.stopGear(context.WithoutCancel(ctx), g, io.Discard)
		a.o.Store.Update(func(tx *store.Tx) error { return tx.Delete(store.GearKey(g.ID)) })
		a.netRemove(g.ID)
		return nil, err
	}
	l := a.o.Layout
	if err := a.PrepareAppDir(&app); err != nil {
		return fail(err)
	}
	uid := app.UID
	for _, d := range []string{l.Data(app.ID), l.Tmp(app.ID), l.Home(app.ID)} {
		os.Chmod(d, 0o700)
		if uid > 0 {
			os.Chown(d, uid, uid)
		}
	}
	if uid > 0 {
		os.Chown(l.AppDir(app.ID), 0, uid)
		os.Chmod(l.AppDir(app.ID), 0o710)
	}
	// The password, for initdb and redis: in the app's private tmp.
	secret := filepath.Join(l.Tmp(app.ID), "."+c.Name+".secret")
	if err := os.WriteFile(secret, []byte(c.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if uid > 0 {
		os.Chown(secret, uid, uid)
	}
	creds := cartridge.Credentials{User: c.User, Password: c.Password, Database: c.Database}
	command, err := cartridge.Start(c.Name, g.IP, g.Port, filepath.Join(l.Data(app.ID), c.Name), secret, creds)
	if err != nil {
		return fail(err)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + l.Home(app.ID), "LANG=C.UTF-8", "TMPDIR=" + l.Tmp(app.ID)}
	if uid > 0 {
		nss, err := a.nssWrapper(&app)
		if err != nil {
			return fail(err)
		}
		env = append(env, nss...)
	}
	spec := shim.Spec{GearID: g.ID, Command: command, Dir: l.Data(app.ID), Env: env,
		LogFile: filepath.Join(l.Logs(app.ID), g.ID+".log"), LogMax: 10 << 20, UID: uid, GID: uid}
	sb, err := a.sandboxOf(&app, g.ID, command, l.Data(app.ID), env)
	if err != nil {
		return fail(err)
	}
	sb.Hostname = c.Name + "-" + app.Name + "-" + app.Domain
	sb.Private, sb.Traverse = nil, nil // made above, for process mode too
	if err := a.driverFor(g).Prepare(sb, &spec); err != nil {
		return fail(err)
	}
	if err := a.writeShimSpec(g.ID, spec); err != nil {
		return fail(err)
	}
	if err := a.rt.Start(g.ID); err != nil {
		return fail(err)
	}
	if err := a.waitReady(ctx, &g, ""); err != nil {
		return fail(fmt.Errorf("%s did not start: %v\n%s", c.Name, err, a.logTail(&g, 20)))
	}
	return &g, nil
}

// RemoveCartridge stops an app's cartridge gear and deletes its data.
func (a *Agent) RemoveCartridge(ctx context.Context, appKey, name string) error {
	unlock := a.appLock(appKey)
	defer unlock()
	var gears []store.Gear
	var app store.App
	err := a.o.Store.Update(func(tx *store.Tx) error {
		gears = nil // a transaction may run again (etcd)
		if err := tx.Get(appKey, &app); err != nil {
			return err
		}
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.AppKey == appKey && g.Service == name {
				gears = append(gears, g)
				tx.Delete(store.GearKey(g.ID))
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, g := range gears {
		a.stopGear(ctx, g, io.Discard)
	}
	a.netRemove(gearIDs(gears)...)
	os.RemoveAll(filepath.Join(a.o.Layout.Data(app.ID), name))
	os.Remove(filepath.Join(a.o.Layout.Tmp(app.ID), "."+name+".secret"))
	return nil
}

// nssWrapper gives the app's user a name (databases look themselves up)
// without touching the host's /etc/passwd: nss_wrapper with passwd and
// group files in the app's home, as OpenShift did for arbitrary uids.
func (a *Agent) nssWrapper(app *store.App) ([]string, error) {
	libs, _ := filepath.Glob("/usr/lib/*/libnss_wrapper.so")
	if len(libs) == 0 {
		libs, _ = filepath.Glob("/usr/lib*/libnss_wrapper.so")
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("nss_wrapper is not installed on the server (scripts/install-deps installs libnss-wrapper)")
	}
	home := a.o.Layout.Home(app.ID)
	name := "gantry-" + app.ID[:min(8, len(app.ID))]
	passwd := filepath.Join(home, ".gantry-passwd")
	group := filepath.Join(home, ".gantry-group")
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	hostGroup, _ := os.ReadFile("/etc/group")
	pw := fmt.Sprintf("%s%s:x:%d:%d:%s:%s:/bin/sh\n", hostPasswd, name, app.UID, app.UID, app.FullName(), home)
	gr := fmt.Sprintf("%s%s:x:%d:\n", hostGroup, name, app.UID)
	for path, body := range map[string]string{passwd: pw, group: gr} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	return []string{"LD_PRELOAD=" + libs[0], "NSS_WRAPPER_PASSWD=" + passwd, "NSS_WRAPPER_GROUP=" + group}, nil
}
