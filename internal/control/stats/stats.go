// Package stats keeps the last hour of each app's traffic as the server's
// own metrics see it, for the console's charts: requests per second,
// latency (p50, p99), live connections and running web gears, one sample
// every few seconds. It reads the Prometheus registry the router already
// fills; it keeps nothing on disk (a restart starts the hour again), and
// each machine knows its own router's traffic.
package stats

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sample is one point of an app's history.
type Sample struct {
	Time        time.Time `json:"t"`
	RPS         float64   `json:"rps"`
	P50         float64   `json:"p50_ms"`
	P99         float64   `json:"p99_ms"`
	Connections float64   `json:"connections"`
	Gears       int       `json:"gears"`
}

// Options configure a History.
type Options struct {
	Gather prometheus.Gatherer
	// Gears counts each app's running web gears (by DOMAIN/NAME).
	Gears func() map[string]int
	Every time.Duration // default 5s
	Keep  time.Duration // default 1h
}

// History samples every app and keeps the last Keep of samples.
type History struct {
	o    Options
	mu   sync.RWMutex
	apps map[string][]Sample
	prev map[string]raw
	last time.Time
}

// raw is an app's counters at one tick.
type raw struct {
	requests float64
	count    uint64
	buckets  []bucket // cumulative
	conns    float64
}

type bucket struct {
	upper float64
	count uint64
}

// New makes a History; Run samples.
func New(o Options) *History {
	if o.Every <= 0 {
		o.Every = 5 * time.Second
	}
	if o.Keep <= 0 {
		o.Keep = time.Hour
	}
	return &History{o: o, apps: map[string][]Sample{}, prev: map[string]raw{}}
}

// Every is the time between samples.
func (h *History) Every() time.Duration { return h.o.Every }

// Run samples until ctx ends.
func (h *History) Run(ctx context.Context) error {
	t := time.NewTicker(h.o.Every)
	defer t.Stop()
	h.Tick(time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			h.Tick(now)
		}
	}
}

// Of is an app's samples, oldest first.
func (h *History) Of(app string) []Sample {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]Sample(nil), h.apps[app]...)
}

// Tick takes one sample of every app.
func (h *History) Tick(now time.Time) {
	cur := h.read()
	var gears map[string]int
	if h.o.Gears != nil {
		gears = h.o.Gears()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	dt := now.Sub(h.last).Seconds()
	first := h.last.IsZero()
	h.last = now
	names := map[string]bool{}
	for a := range cur {
		names[a] = true
	}
	for a := range gears {
		names[a] = true
	}
	for a := range names {
		c, p := cur[a], h.prev[a]
		s := Sample{Time: now.UTC(), Connections: c.conns, Gears: gears[a]}
		if !first && dt > 0 && c.count >= p.count {
			s.RPS = math.Max(0, (c.requests-p.requests)/dt)
			if n := c.count - p.count; n > 0 {
				delta := make([]bucket, len(c.buckets))
				for i, b := range c.buckets {
					delta[i] = bucket{upper: b.upper, count: b.count}
					if i < len(p.buckets) && p.buckets[i].upper == b.upper {
						delta[i].count -= p.buckets[i].count
					}
				}
				s.P50 = 1000 * quantile(0.5, n, delta)
				s.P99 = 1000 * quantile(0.99, n, delta)
			}
		}
		list := append(h.apps[a], s)
		cut := 0
		for cut < len(list) && now.Sub(list[cut].Time) > h.o.Keep {
			cut++
		}
		h.apps[a] = list[cut:]
	}
	h.prev = cur
	for a := range h.apps {
		if !names[a] {
			delete(h.apps, a) // a deleted app
		}
	}
}

// quantile estimates the q-quantile of n observations from cumulative
// bucket counts, by linear interpolation within the bucket it falls in.
func quantile(q float64, n uint64, bs []bucket) float64 {
	if len(bs) == 0 || n == 0 {
		return 0
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	target := q * float64(n)
	lower, below := 0.0, uint64(0)
	for _, b := range bs {
		if float64(b.count) >= target {
			if b.count == below || math.IsInf(b.upper, 1) {
				return lower
			}
			return lower + (b.upper-lower)*(target-float64(below))/float64(b.count-below)
		}
		lower, below = b.upper, b.count
	}
	return lower // beyond the last bucket: its bound
}

// read gathers the registry's per-app counters.
func (h *History) read() map[string]raw {
	out := map[string]raw{}
	if h.o.Gather == nil {
		return out
	}
	fams, err := h.o.Gather.Gather()
	if err != nil && len(fams) == 0 {
		return out
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			app := label(m, "app")
			if app == "" {
				continue
			}
			r := out[app]
			switch f.GetName() {
			case "gantry_http_requests_total":
				r.requests += m.GetCounter().GetValue()
			case "gantry_http_request_duration_seconds":
				hg := m.GetHistogram()
				r.count = hg.GetSampleCount()
				for _, b := range hg.GetBucket() {
					r.buckets = append(r.buckets, bucket{upper: b.GetUpperBound(), count: b.GetCumulativeCount()})
				}
				r.buckets = append(r.buckets, bucket{upper: math.Inf(1), count: hg.GetSampleCount()})
			case "gantry_app_connections":
				r.conns = m.GetGauge().GetValue()
			default:
				continue
			}
			out[app] = r
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
