package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/cluster"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/handoff"
	"github.com/gantry-paas/gantry/internal/layout"
)

// liveMigration moves a machine that runs alone on SQLite into a new
// cluster's store without stopping: it refuses changes (the store is
// frozen, SQLite's log written into its file), leaves the cluster's
// settings for the next process and hands its sockets to a new process
// of itself, which starts the cluster as --cluster-init does and moves
// the records. If that process fails, this one thaws and serves on.
type liveMigration struct {
	mu        sync.Mutex
	o         *Options
	clustered bool
	st        *store.Store
	ho        *handoff.Handoff
	lay       layout.Layout
	httpsPort int
	log       *slog.Logger
}

func refusal(status int, code, detail string) error {
	return &apitypes.Problem{Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

func (m *liveMigration) run(ctx context.Context, req apitypes.StoreMigrateRequest) (*apitypes.StoreMigrateView, error) {
	if !m.mu.TryLock() {
		return nil, refusal(http.StatusConflict, apitypes.CodeConflict, "a move to etcd is under way already")
	}
	defer m.mu.Unlock()
	if m.clustered {
		return nil, refusal(http.StatusConflict, apitypes.CodeConflict, "this machine is in a cluster already: its records are in etcd")
	}
	if m.o.Store != "" {
		return nil, refusal(http.StatusConflict, apitypes.CodeConflict, "this platform keeps its records in etcd already (--store)")
	}
	addr, err := netip.ParseAddr(req.Advertise)
	if err != nil || addr.IsUnspecified() {
		return nil, refusal(http.StatusBadRequest, apitypes.CodeInvalid, fmt.Sprintf("advertise %q: give the IP address other machines will reach this one at", req.Advertise))
	}
	if req.NodeName != "" {
		o := *m.o
		o.NodeName = req.NodeName
		if _, err := thisNode(o, ""); err != nil {
			return nil, refusal(http.StatusBadRequest, apitypes.CodeInvalid, err.Error())
		}
	}
	dir := m.o.DataDir
	if err := (&cluster.PendingInit{Advertise: addr.String(), NodeName: req.NodeName}).Save(dir); err != nil {
		return nil, err
	}
	m.log.Info("moving the records to etcd: changes are refused until the new process serves", "advertise", addr)
	// undo, after a failed new process: if it had not moved the records
	// yet, this one serves on, on SQLite; once they moved, this one stays
	// frozen (the records live in etcd now) until it is restarted.
	undo := func() (moved bool) {
		os.Remove(cluster.PendingInitPath(dir))
		if _, err := os.Stat(m.lay.DB()); err != nil {
			return true
		}
		os.Remove(cluster.StatePath(dir))
		os.RemoveAll(cluster.MemberDir(dir))
		m.st.Freeze(false)
		return false
	}
	if err := m.st.Freeze(true); err != nil {
		undo()
		return nil, fmt.Errorf("writing SQLite's log into its file: %w", err)
	}
	if err := m.ho.Upgrade(ctx); err != nil {
		if undo() {
			m.log.Error("the process that took the records to etcd failed after moving them: restart the server (it starts on etcd)", "err", err)
			return nil, fmt.Errorf("the records are in etcd now, but the process that was to serve them failed: %w; restart the server (it starts on etcd; its log says what failed)", err)
		}
		if errors.Is(err, handoff.ErrUnavailable) {
			return nil, refusal(http.StatusConflict, apitypes.CodeConflict, "this server cannot hand its sockets to a new process (see its log at start): stop it and start it with --cluster-init --advertise "+addr.String())
		}
		return nil, fmt.Errorf("the process that was to take over on etcd failed, so this one serves on, on SQLite: %w (its log says why)", err)
	}
	return &apitypes.StoreMigrateView{Store: "etcd", Advertise: addr.String(), JoinURL: "https://" + addr.String() + portSuffix443(m.httpsPort)}, nil
}
