package autoscale

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

type fixedRouter struct {
	conns map[string]int
	last  time.Time
}

func (r fixedRouter) Concurrency(k string) int      { return r.conns[k] }
func (r fixedRouter) LastActivity(string) time.Time { return r.last }

// The scaler of one machine counts every machine's router: the others'
// reports added to its own, a machine that is down left out.
func TestClusterLoad(t *testing.T) {
	st, err := store.New(store.NewMem(), filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	blog := store.App{Name: "blog", Domain: "acme"}
	st.Update(func(tx *store.Tx) error { return tx.Put(blog.Key(), &blog) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	m1 := &ClusterLoad{Local: fixedRouter{conns: map[string]int{blog.Key(): 3}, last: now.Add(-time.Minute)}, Store: st, Self: "m1"}
	m2 := &ClusterLoad{Local: fixedRouter{conns: map[string]int{blog.Key(): 5}, last: now}, Store: st, Self: "m2"}
	m3 := &ClusterLoad{Local: fixedRouter{conns: map[string]int{blog.Key(): 100}, last: now}, Store: st, Self: "m3"}
	st.KeepAlive(ctx, "m1", time.Second, nil)
	st.KeepAlive(ctx, "m2", time.Second, nil)
	m2.report()
	m3.report() // m3 is down: not counted
	if got := m1.Concurrency(blog.Key()); got != 8 {
		t.Errorf("m1 sees %d connections; want its 3 and m2's 5", got)
	}
	if got := m1.LastActivity(blog.Key()); !got.Equal(time.Unix(0, now.UnixNano())) {
		t.Errorf("last activity %v; want m2's %v", got, now)
	}
}
