package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/scheduler"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/names"
)

// NodeTTL is how long a machine stays up in the others' eyes after its
// last renewal of its presence.
const NodeTTL = 5 * time.Second

// NodeStatus is a node with what the store says of it now.
type NodeStatus struct {
	store.Node
	Up bool
	// Leads are the roles it leads now (scheduler, autoscaler).
	Leads      []string
	Gears      int
	MemoryUsed int64 // the sizes of its gears
}

// RegisterNode records this machine as a node (keeping what operators set
// on it: cordon, the time it joined). A name another machine is using
// while up is refused.
func (s *Service) RegisterNode(n store.Node) error {
	if err := names.Label("node", n.Name); err != nil {
		return refuse(Invalid, apitypes.CodeInvalid, err.Error()+" (pass --node-name)")
	}
	live, err := s.st.Live()
	if err != nil {
		return err
	}
	return s.st.Update(func(tx *store.Tx) error {
		var old store.Node
		err := tx.Get(store.NodeKey(n.Name), &old)
		switch {
		case errors.Is(err, store.ErrNotFound):
			n.Joined = time.Now().UTC()
		case err != nil:
			return err
		default:
			if live[n.Name] && old.Address != n.Address {
				return refuse(Conflict, apitypes.CodeNameTaken, fmt.Sprintf("node name %s is in use by the machine at %s, which is up: give this one another --node-name", n.Name, old.Address))
			}
			n.Joined, n.Cordoned = old.Joined, old.Cordoned
			if n.GearBlock == "" {
				n.GearBlock = old.GearBlock // claimed before (scheduler.ClaimBlock)
			}
			if old.Address == "" { // a record made by the claim alone
				n.Joined = time.Now().UTC()
			}
		}
		n.Started = time.Now().UTC()
		return tx.Put(store.NodeKey(n.Name), &n)
	})
}

// Nodes lists the machines with their state (admins only).
func (s *Service) Nodes(caller *store.User) ([]NodeStatus, error) {
	if !caller.Admin {
		return nil, refuse(Forbidden, apitypes.CodeForbidden, "only an admin can list nodes")
	}
	live, err := s.st.Live()
	if err != nil {
		return nil, err
	}
	leads := map[string][]string{}
	for _, role := range []string{"scheduler", "autoscaler"} {
		if who, err := s.st.Leader(role); err == nil && who != "" {
			leads[who] = append(leads[who], role)
		}
	}
	var out []NodeStatus
	err = s.st.View(func(tx *store.Tx) error {
		nodes, err := store.ListNodes(tx)
		if err != nil {
			return err
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		apps := map[string]store.App{}
		all, err := store.ListApps(tx)
		for _, a := range all {
			apps[a.Key()] = a
		}
		for _, n := range nodes {
			ns := NodeStatus{Node: n, Up: live[n.Name], Leads: leads[n.Name]}
			for _, g := range gears {
				if g.Node == n.Name {
					ns.Gears++
					app := apps[g.AppKey]
					ns.MemoryUsed += scheduler.GearMemory(app.GearSize)
				}
			}
			out = append(out, ns)
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Cordon stops (or, with on false, resumes) placing new gears on a node.
func (s *Service) Cordon(caller *store.User, name string, on bool) (store.Node, error) {
	var n store.Node
	if !caller.Admin {
		return n, refuse(Forbidden, apitypes.CodeForbidden, "only an admin can cordon nodes")
	}
	err := s.st.Update(func(tx *store.Tx) error {
		if err := tx.Get(store.NodeKey(name), &n); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return refuse(NotFound, apitypes.CodeNotFound, fmt.Sprintf("no node %s (gantry node list shows them)", name))
			}
			return err
		}
		n.Cordoned = on
		return tx.Put(store.NodeKey(name), &n)
	})
	return n, err
}

// RemoveNode forgets a node that is down and runs no gear.
func (s *Service) RemoveNode(caller *store.User, name string) error {
	if !caller.Admin {
		return refuse(Forbidden, apitypes.CodeForbidden, "only an admin can remove nodes")
	}
	live, err := s.st.Live()
	if err != nil {
		return err
	}
	if live[name] {
		return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("node %s is up: drain it (gantry node drain %s), stop its server, then remove it", name, name))
	}
	err = s.st.Update(func(tx *store.Tx) error {
		if ok, err := tx.Has(store.NodeKey(name)); err != nil || !ok {
			if err == nil {
				err = refuse(NotFound, apitypes.CodeNotFound, fmt.Sprintf("no node %s (gantry node list shows them)", name))
			}
			return err
		}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if g.Node == name && g.Service != "" {
				return refuse(Conflict, apitypes.CodeConflict, fmt.Sprintf("node %s holds the %s cartridge of %s and its data: bring the node back, or remove the cartridge", name, g.Service, store.AppName(g.AppKey)))
			}
		}
		for _, g := range gears {
			if g.Node == name {
				if err := tx.Delete(store.GearKey(g.ID)); err != nil {
					return err
				}
			}
		}
		return tx.Delete(store.NodeKey(name))
	})
	if err != nil || s.o.Cluster == nil {
		return err
	}
	// Its etcd member goes too, so that the quorum counts the machines
	// that are there (and the next machine to join takes its place).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.o.Cluster.RemoveMember(ctx, name); err != nil {
		return fmt.Errorf("node %s is forgotten, but its etcd member could not be removed: %w (etcdctl member remove does it)", name, err)
	}
	return nil
}

// DrainResult says what a drain moved and what stayed.
type DrainResult struct {
	Moved  map[string]int // app → gears moved
	Stayed []string       // cartridges that stay with their data
}

// DrainNode cordons a machine and moves every app's web gears off it,
// each app without dropping a request. Cartridges stay (their data is
// there): they are named in the result.
func (s *Service) DrainNode(ctx context.Context, caller *store.User, name string, out io.Writer) (*DrainResult, error) {
	if _, err := s.Cordon(caller, name, true); err != nil {
		return nil, err
	}
	res := &DrainResult{Moved: map[string]int{}}
	var apps []string
	err := s.st.View(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		seen := map[string]bool{}
		for _, g := range gears {
			switch {
			case g.Node != name:
			case g.Service != "":
				res.Stayed = append(res.Stayed, fmt.Sprintf("%s of %s", g.Service, store.AppName(g.AppKey)))
			case !seen[g.AppKey]:
				seen[g.AppKey] = true
				apps = append(apps, g.AppKey)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(apps)
	for _, key := range apps {
		n, err := s.o.Agent.Evacuate(ctx, key, name, out)
		if err != nil {
			return res, refuse(Failed, apitypes.CodeDeployFailed, fmt.Sprintf("moving the gears of %s off %s: %v (the node stays cordoned; its other apps were not moved)", store.AppName(key), name, err))
		}
		if n > 0 {
			res.Moved[store.AppName(key)] = n
		}
	}
	return res, nil
}
