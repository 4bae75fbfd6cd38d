package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/control/api"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/cluster"
	"github.com/gantry-paas/gantry/internal/control/service"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/node/agent"
	"github.com/gantry-paas/gantry/internal/node/peer"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
)

// clustered is a machine's part in a cluster, once its store is open.
type clustered struct {
	state  *cluster.State
	certs  *cluster.Certs
	client *clientv3.Client
	member *cluster.Member // nil: this machine holds no etcd member
}

func (c *clustered) Close() {
	if c == nil {
		return
	}
	c.client.Close()
	if c.member != nil {
		c.member.Close()
	}
}

// joinFiles are the files of the data directory a machine that joins
// receives: the CA's cluster files and the platform key.
func joinFiles() []string {
	var out []string
	for _, f := range pki.ClusterFiles {
		out = append(out, filepath.Join("pki", f))
	}
	// One SSH host key for the platform: a push may go to any machine.
	return append(out, "secrets.key", "ssh_host_ed25519_key")
}

// openCluster makes or rejoins this machine's part in a cluster: with
// --cluster-init a new one (the records of a machine that ran alone on
// SQLite move into it), with --join one that exists, and at a later start
// what DATA/cluster.json says. It returns nil when the machine is in no
// cluster.
func openCluster(ctx context.Context, o *Options, lay layout.Layout, log *slog.Logger) (*store.Store, *clustered, error) {
	state, err := cluster.Load(o.DataDir)
	if err != nil {
		return nil, nil, err
	}
	if state == nil && !o.ClusterInit && o.Join == "" {
		// A live move from SQLite (gantry admin store migrate): this
		// process, which takes over, starts the cluster.
		pending, err := cluster.LoadPendingInit(o.DataDir)
		if err != nil {
			return nil, nil, err
		}
		if pending != nil {
			o.ClusterInit, o.Advertise = true, pending.Advertise
			if pending.NodeName != "" {
				o.NodeName = pending.NodeName
			}
			log.Info("moving this machine's records into a new cluster's store, as asked", "advertise", o.Advertise)
		}
	}
	fresh := o.ClusterInit || o.Join != ""
	if fresh {
		switch {
		case state != nil:
			return nil, nil, fmt.Errorf("this machine is part of a cluster already (%s): start it without --cluster-init or --join", cluster.StatePath(o.DataDir))
		case o.ClusterInit && o.Join != "":
			return nil, nil, errors.New("--cluster-init starts a new cluster, --join enters one: give one of them")
		case o.Store != "":
			return nil, nil, errors.New("--store names an etcd you run; --cluster-init and --join run etcd in Gantry: give one or the other")
		case o.Advertise == "":
			return nil, nil, errors.New("--advertise ADDRESS is required in a cluster: the address the other machines reach this one at")
		}
	}
	if state == nil && !fresh {
		return nil, nil, nil
	}
	c := &clustered{state: state}
	fail := func(err error) (*store.Store, *clustered, error) { c.Close(); return nil, nil, err }
	switch {
	case state != nil:
		if o.CloudDomain == "" {
			o.CloudDomain = state.CloudDomain
		}
		if o.Advertise == "" {
			o.Advertise = state.Advertise
		}
		if o.NodeName == "" {
			o.NodeName = state.Name
		}
	case o.ClusterInit:
		node, err := thisNode(*o, "")
		if err != nil {
			return nil, nil, err
		}
		if _, err := pki.Open(lay.PKI(), cloudOrDefault(o.CloudDomain)); err != nil {
			return nil, nil, err
		}
		c.state = &cluster.State{Name: node.Name, Advertise: o.Advertise, Member: true, ClientPort: o.EtcdClientPort, PeerPort: o.EtcdPeerPort,
			CloudDomain: cloudOrDefault(o.CloudDomain)}
		c.state.Endpoints = []string{c.state.ClientURL()}
	default: // --join
		node, err := thisNode(*o, "")
		if err != nil {
			return nil, nil, err
		}
		c.state = &cluster.State{Name: node.Name, Advertise: o.Advertise, ClientPort: o.EtcdClientPort, PeerPort: o.EtcdPeerPort}
		log.Info("joining the cluster", "through", o.Join, "node", node.Name)
		req := apitypes.JoinRequest{Token: o.JoinToken, Name: node.Name, Address: o.Advertise, PeerURL: c.state.PeerURL()}
		if iso, _, err := chooseIsolation(o.Isolation); err == nil {
			req.Isolation = iso
			if iso == agent.Namespaces {
				subnet := netplan.DefaultSubnet
				if o.GearSubnet != "" {
					if subnet, err = netip.ParsePrefix(o.GearSubnet); err != nil {
						return nil, nil, fmt.Errorf("--gear-subnet: %w", err)
					}
				}
				req.GearSubnet = subnet.Masked().String()
			}
		}
		g, err := cluster.Join(ctx, o.Join, req)
		if err != nil {
			return nil, nil, err
		}
		if o.CloudDomain != "" && o.CloudDomain != g.CloudDomain {
			return nil, nil, fmt.Errorf("--cloud-domain %s: the cluster's is %s (leave the flag out)", o.CloudDomain, g.CloudDomain)
		}
		if err := cluster.WriteGrant(o.DataDir, g); err != nil {
			return nil, nil, err
		}
		c.state.CloudDomain, c.state.Member, c.state.Endpoints = g.CloudDomain, g.Member, g.Endpoints
		o.CloudDomain = g.CloudDomain
		if g.Member {
			c.state.Endpoints = append(c.state.Endpoints, c.state.ClientURL())
		}
		if c.certs, err = cluster.NodeCerts(lay.PKI(), c.state.Name, c.state.Advertise); err != nil {
			return nil, nil, err
		}
		if g.Member {
			if c.member, err = cluster.StartMember(o.DataDir, c.state, c.certs, g.InitialCluster); err != nil {
				return nil, nil, err
			}
		}
	}
	if c.certs == nil {
		if c.certs, err = cluster.NodeCerts(lay.PKI(), c.state.Name, c.state.Advertise); err != nil {
			return nil, nil, err
		}
	}
	if c.member == nil && c.state.Member {
		if c.member, err = cluster.StartMember(o.DataDir, c.state, c.certs, ""); err != nil {
			return nil, nil, err
		}
	}
	if c.client, err = cluster.Client(c.state.Endpoints, c.certs, c.state.Advertise); err != nil {
		return fail(fmt.Errorf("connecting to the cluster's etcd: %w", err))
	}
	// The members may have changed while this machine was away.
	mctx, cancel := context.WithTimeout(ctx, store.DefaultWait)
	if eps, err := (cluster.Members{C: c.client}).Endpoints(mctx); err == nil && len(eps) > 0 {
		c.state.Endpoints = eps
		c.client.SetEndpoints(eps...)
	}
	cancel()
	if err := c.state.Save(o.DataDir); err != nil {
		return fail(err)
	}
	st, err := store.New(store.NewEtcd(c.client, "/gantry/"), store.KeyFile(lay.DB()))
	if err != nil {
		return fail(err)
	}
	if o.ClusterInit {
		if err := migrateSQLite(lay, st, log); err != nil {
			st.Close()
			return fail(err)
		}
		if err := adoptSingleMachine(st, c.state.Name); err != nil {
			st.Close()
			return fail(err)
		}
		os.Remove(cluster.PendingInitPath(o.DataDir))
	}
	return st, c, nil
}

func cloudOrDefault(d string) string {
	if d == "" {
		return "localhost"
	}
	return d
}

// migrateSQLite copies the records of a machine that ran alone into the
// new cluster's store, and keeps the SQLite file aside (renamed), so that
// a second --cluster-init cannot copy them again.
func migrateSQLite(lay layout.Layout, st *store.Store, log *slog.Logger) error {
	if _, err := os.Stat(lay.DB()); err != nil {
		return nil
	}
	old, err := store.Open(lay.DB())
	if err != nil {
		return fmt.Errorf("opening the records to move into the cluster: %w", err)
	}
	n, err := store.Copy(old, st)
	old.Close()
	if err != nil {
		return fmt.Errorf("moving the records into the cluster's store: %w (nothing was removed; start again with --cluster-init after deleting %s)", err, cluster.StatePath(lay.Root))
	}
	if err := os.Rename(lay.DB(), lay.DB()+".migrated"); err != nil {
		return err
	}
	for _, f := range []string{"-wal", "-shm"} {
		os.Remove(lay.DB() + f)
	}
	log.Info("moved this machine's records from SQLite into the cluster's store", "records", n, "kept_aside", lay.DB()+".migrated")
	return nil
}

// ops are the store's members for joins (nil: no cluster).
func (c *clustered) ops() service.Cluster {
	if c == nil {
		return nil
	}
	return clusterOps{cluster.Members{C: c.client}}
}

// adoptSingleMachine makes the gears of the machine that ran alone this
// node's, under its cluster name, and forgets its old node record.
func adoptSingleMachine(st *store.Store, name string) error {
	return st.Update(func(tx *store.Tx) error {
		nodes, err := store.ListNodes(tx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name != name {
				if err := tx.Delete(store.NodeKey(n.Name)); err != nil {
					return err
				}
			}
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			g.Node = name
			if err := tx.Put(store.GearKey(g.ID), &g); err != nil {
				return err
			}
		}
		return nil
	})
}

// redeployStrandedGears rolls the apps whose gears the other machines
// cannot reach (from before the machine became a cluster: on loopback in
// process mode, outside its block of the gear subnet when namespaced)
// onto new gears, trying again while it fails.
func redeployStrandedGears(ctx context.Context, st *store.Store, ag *agent.Agent, stranded func(store.Gear) bool, log *slog.Logger) {
	for try := 0; try < 10 && ctx.Err() == nil; try++ {
		if redeployStrandedOnce(ctx, st, ag, stranded, log) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

func redeployStrandedOnce(ctx context.Context, st *store.Store, ag *agent.Agent, stranded func(store.Gear) bool, log *slog.Logger) bool {
	var apps []store.App
	st.View(func(tx *store.Tx) error {
		all, err := store.ListApps(tx)
		if err != nil {
			return err
		}
		gears, err := store.ListGears(tx)
		for _, a := range all {
			for _, g := range gears {
				if g.AppKey == a.Key() && (g.Web() || g.Worker()) && g.Node == ag.Node() && stranded(g) && a.ActiveDeployment != "" {
					apps = append(apps, a)
					break
				}
			}
		}
		return err
	})
	done := true
	for _, a := range apps {
		log.Info("replacing the app's gears that other machines cannot reach", "app", a.FullName())
		if err := ag.Rollout(ctx, a.Key(), "", io.Discard); err != nil { // a push may have come meanwhile
			log.Error("replacing the app's gears that other machines cannot reach (tried again in 5s)", "app", a.FullName(), "err", err)
			done = false
		}
	}
	return done
}

// clusterOps are the store's members, for joins.
type clusterOps struct{ m cluster.Members }

func (c clusterOps) AddMember(ctx context.Context, name, peerURL string) (string, []string, error) {
	return c.m.Add(ctx, name, peerURL)
}
func (c clusterOps) MemberCount(ctx context.Context) (int, error)    { return c.m.Count(ctx) }
func (c clusterOps) Endpoints(ctx context.Context) ([]string, error) { return c.m.Endpoints(ctx) }
func (c clusterOps) RemoveMember(ctx context.Context, name string) error {
	return c.m.Remove(ctx, name)
}

// leaderFlag holds, while this machine leads a role, a flag the role's
// loop reads (the autoscaler decides on one machine at a time).
type leaderFlag struct {
	st   *store.Store
	role string
	self string
	on   atomic.Bool
}

func (l *leaderFlag) Run(ctx context.Context) error {
	return l.st.Lead(ctx, l.role, l.self, 5*time.Second, func(ctx context.Context) {
		l.on.Store(true)
		<-ctx.Done()
		l.on.Store(false)
	})
}

// fn is the flag's reader (nil without an election: always leading).
func (l *leaderFlag) fn() func() bool {
	if l == nil {
		return nil
	}
	return l.on.Load
}

// clusterLogs reads the apps' gear logs on the other machines up.
type clusterLogs struct {
	st    *store.Store
	peers *peer.Client
	self  string
}

func (c clusterLogs) others() []store.Node {
	live, err := c.st.Live()
	if err != nil {
		return nil
	}
	var out []store.Node
	c.st.View(func(tx *store.Tx) error {
		nodes, err := store.ListNodes(tx)
		for _, n := range nodes {
			if n.Name != c.self && live[n.Name] && n.Peer != "" {
				out = append(out, n)
			}
		}
		return err
	})
	return out
}

func (c clusterLogs) Tail(ctx context.Context, appID string, n int) []applog.Line {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []applog.Line
	for _, nd := range c.others() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			c.peers.Logs(tctx, nd.Peer, appID, n, false, func(l applog.Line) error {
				mu.Lock()
				out = append(out, l)
				mu.Unlock()
				return nil
			})
		}()
	}
	wg.Wait()
	return out
}

func (c clusterLogs) Follow(ctx context.Context, appID string, fn func(applog.Line) error) {
	for _, nd := range c.others() {
		go c.peers.Logs(ctx, nd.Peer, appID, 0, true, fn)
	}
}

func remoteLogs(clu *clustered, st *store.Store, peers *peer.Client, self string) api.RemoteLogs {
	if clu == nil {
		return nil
	}
	return clusterLogs{st: st, peers: peers, self: self}
}

// overlayKey is this machine's WireGuard private key, made at first use
// and kept root-only at path.
func overlayKey(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(raw)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	key, err := netplan.NewWireGuardKey()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keeping the WireGuard key: %w", err)
	}
	return key, nil
}

// parseRoles reads --roles: some of control, node, edge (all three on a
// machine that runs alone).
func parseRoles(flag string, cluster bool) ([]string, error) {
	all := []string{store.RoleControl, store.RoleNode, store.RoleEdge}
	if flag == "" {
		return all, nil
	}
	var roles []string
	for _, r := range strings.Split(flag, ",") {
		r = strings.TrimSpace(r)
		if !slices.Contains(all, r) {
			return nil, fmt.Errorf("--roles %q: %q is not a role; choose among control, node and edge", flag, r)
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("--roles %q: give at least one of control, node and edge", flag)
	}
	if !cluster && len(roles) < len(all) {
		return nil, fmt.Errorf("--roles %s: a machine that runs alone plays every role (roles apply in a cluster: --cluster-init or --join)", flag)
	}
	return roles, nil
}

// noControl says where to go instead of a machine without the control
// role (the API, SSH and git live on the control machines).
func noControl(st *store.Store, self string) string {
	var others []string
	st.View(func(tx *store.Tx) error {
		nodes, err := store.ListNodes(tx)
		for _, n := range nodes {
			if n.Name != self && n.HasRole(store.RoleControl) {
				others = append(others, n.Name+" ("+n.Address+")")
			}
		}
		return err
	})
	msg := "this machine (" + self + ") has no control role: the API, SSH and git are on the control machines"
	if len(others) > 0 {
		msg += ": " + strings.Join(others, ", ")
	}
	return msg
}

// noControlAPI answers the platform's requests on a machine without the
// control role with where to go.
func noControlAPI(st *store.Store, self string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(apitypes.Problem{Title: "Service Unavailable", Status: http.StatusServiceUnavailable,
			Code: "no_control_role", Detail: noControl(st, self) + " (gantry login --server https://…)"})
	})
}
