package autoscale

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// ClusterLoad is the routers' load of every machine of a cluster, as the
// scaler sees it: each machine reports its own router's live connections
// and last traffic per app every second (Run); Concurrency and
// LastActivity add the reports of the machines up to this one's router.
type ClusterLoad struct {
	Local Router
	Store *store.Store
	Self  string

	mu     sync.Mutex
	read   time.Time
	others map[string]appLoad // by app key, the other machines' summed
}

type appLoad struct {
	Conns int   `json:"c"`
	Last  int64 `json:"t,omitempty"` // unix nanoseconds of the last traffic
}

// Run reports this machine's load every second until ctx ends.
func (l *ClusterLoad) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		l.report()
	}
}

// report writes this machine's load once.
func (l *ClusterLoad) report() {
	var apps []store.App
	if l.Store.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	}) != nil {
		return
	}
	rep := map[string]appLoad{}
	for _, a := range apps {
		key := a.Key()
		al := appLoad{Conns: l.Local.Concurrency(key)}
		if last := l.Local.LastActivity(key); !last.IsZero() {
			al.Last = last.UnixNano()
		}
		if al.Conns > 0 || al.Last > 0 {
			rep[key] = al
		}
	}
	raw, _ := json.Marshal(rep)
	l.Store.Report(l.Self, raw)
}

// load reads the other machines' reports (at most every half second).
func (l *ClusterLoad) load() map[string]appLoad {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.read) < 500*time.Millisecond {
		return l.others
	}
	l.read = time.Now()
	reports, err := l.Store.Reports()
	if err != nil {
		return l.others // the last known
	}
	live, err := l.Store.Live()
	if err != nil {
		return l.others
	}
	sum := map[string]appLoad{}
	for node, raw := range reports {
		if node == l.Self || !live[node] {
			continue
		}
		var rep map[string]appLoad
		if json.Unmarshal(raw, &rep) != nil {
			continue
		}
		for k, v := range rep {
			s := sum[k]
			s.Conns += v.Conns
			s.Last = max(s.Last, v.Last)
			sum[k] = s
		}
	}
	l.others = sum
	return sum
}

// Concurrency is the app's live connections on every machine's router.
func (l *ClusterLoad) Concurrency(appKey string) int {
	return l.Local.Concurrency(appKey) + l.load()[appKey].Conns
}

// LastActivity is the app's last traffic on any machine's router.
func (l *ClusterLoad) LastActivity(appKey string) time.Time {
	last := l.Local.LastActivity(appKey)
	if o := l.load()[appKey].Last; o > 0 && time.Unix(0, o).After(last) {
		return time.Unix(0, o)
	}
	return last
}
