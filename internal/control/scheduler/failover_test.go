package scheduler

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// A machine down past the grace time loses its web gears (their apps are
// scaled back up elsewhere), keeps its cartridges, and is marked down
// since then; when it is up again the mark goes.
func TestFailover(t *testing.T) {
	st, err := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blog := store.App{Name: "blog", Domain: "acme", Scale: 3, ActiveDeployment: "d1"}
	st.Update(func(tx *store.Tx) error {
		tx.Put(blog.Key(), &blog)
		tx.Put(store.NodeKey("m1"), &store.Node{Name: "m1", Roles: []string{store.RoleNode}})
		tx.Put(store.NodeKey("m2"), &store.Node{Name: "m2", Roles: []string{store.RoleNode}})
		for id, node := range map[string]string{"a": "m1", "b": "m2", "c": "m2"} {
			tx.Put(store.GearKey(id), &store.Gear{ID: id, AppKey: blog.Key(), Node: node, State: store.GearRunning})
		}
		return tx.Put(store.GearKey("db"), &store.Gear{ID: "db", AppKey: blog.Key(), Node: "m2", Service: "postgresql", State: store.GearRunning})
	})
	st.KeepAlive(ctx, "m1", time.Second, nil)

	var mu sync.Mutex
	var scaled []string
	var moved int
	f := &Failover{Store: st, Self: "m1", Grace: 300 * time.Millisecond, Every: 20 * time.Millisecond,
		Scale: func(_ context.Context, key string, n int) error {
			mu.Lock()
			defer mu.Unlock()
			scaled = append(scaled, key)
			if n != 3 {
				t.Errorf("scaled to %d; want the app's 3", n)
			}
			return nil
		},
		Moved: func(_ *store.App, node string, n int, _ time.Time) { mu.Lock(); moved += n; mu.Unlock() }}
	start := time.Now()
	go f.Run(ctx)
	gearsOn := func(node string) (web, carts int) {
		st.View(func(tx *store.Tx) error {
			gs, _ := store.ListGears(tx)
			for _, g := range gs {
				if g.Node == node && g.Service == "" {
					web++
				} else if g.Node == node {
					carts++
				}
			}
			return nil
		})
		return
	}
	for {
		if web, _ := gearsOn("m2"); web == 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("m2's gears were not moved")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("moved after %v: before the grace time", d)
	}
	if web, _ := gearsOn("m1"); web != 1 {
		t.Errorf("m1 has %d web gears; want its own 1 (m1 is up)", web)
	} else if _, carts := gearsOn("m2"); carts != 1 {
		t.Errorf("the cartridge of the lost machine: %d; want it kept", carts)
	}
	// The app is scaled back just after its gears' records go.
	for {
		mu.Lock()
		n := len(scaled)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the app was not scaled back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if len(scaled) < 1 || scaled[0] != blog.Key() || moved != 2 {
		t.Errorf("scaled %v, moved %d", scaled, moved)
	}
	mu.Unlock()
	var m2 store.Node
	st.View(func(tx *store.Tx) error { return tx.Get(store.NodeKey("m2"), &m2) })
	if m2.DownSince.IsZero() || Describe("postgresql", m2) == "" {
		t.Error("m2 is not marked down")
	}

	st.KeepAlive(ctx, "m2", time.Second, nil)
	for !m2.DownSince.IsZero() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("m2 is still marked down once up")
		}
		time.Sleep(10 * time.Millisecond)
		st.View(func(tx *store.Tx) error { return tx.Get(store.NodeKey("m2"), &m2) })
	}
}
