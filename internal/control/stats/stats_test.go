package stats

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Requests per second and latency quantiles come from the difference of
// the registry's counters between two ticks; an hour is kept.
func TestHistory(t *testing.T) {
	reg := prometheus.NewRegistry()
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_http_requests_total"}, []string{"app", "code"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gantry_http_request_duration_seconds",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}, []string{"app"})
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gantry_app_connections"}, []string{"app"})
	reg.MustRegister(req, lat, conns)
	h := New(Options{Gather: reg, Gears: func() map[string]int { return map[string]int{"acme/web": 2, "acme/idle": 0} }, Every: 5 * time.Second})
	t0 := time.Now()
	// Before the first tick: traffic the history must not count.
	req.WithLabelValues("acme/web", "2xx").Add(1000)
	h.Tick(t0)
	// 100 requests in 5 s: 90 at ~2 ms, 10 at ~200 ms.
	for i := 0; i < 90; i++ {
		req.WithLabelValues("acme/web", "2xx").Inc()
		lat.WithLabelValues("acme/web").Observe(0.002)
	}
	for i := 0; i < 10; i++ {
		req.WithLabelValues("acme/web", "5xx").Inc()
		lat.WithLabelValues("acme/web").Observe(0.2)
	}
	conns.WithLabelValues("acme/web").Set(7)
	h.Tick(t0.Add(5 * time.Second))
	s := h.Of("acme/web")
	if len(s) != 2 {
		t.Fatalf("%d samples", len(s))
	}
	last := s[1]
	if math.Abs(last.RPS-20) > 0.01 || last.Connections != 7 || last.Gears != 2 {
		t.Errorf("sample %+v; want 20 rps, 7 connections, 2 gears", last)
	}
	if last.P50 < 1 || last.P50 > 2.5 {
		t.Errorf("p50 %.2f ms; want within the 1–2.5 ms bucket", last.P50)
	}
	if last.P99 < 100 || last.P99 > 250 {
		t.Errorf("p99 %.2f ms; want within the 100–250 ms bucket", last.P99)
	}
	if s[0].RPS != 0 {
		t.Errorf("the first sample counts traffic from before: %+v", s[0])
	}
	if idle := h.Of("acme/idle"); len(idle) != 2 || idle[1].Gears != 0 {
		t.Errorf("an app without traffic: %+v", idle)
	}
	// An hour later the old samples are gone.
	h.Tick(t0.Add(time.Hour + 6*time.Second))
	if n := len(h.Of("acme/web")); n != 1 {
		t.Errorf("%d samples kept after an hour", n)
	}
	// A quiet interval has no latency.
	h.Tick(t0.Add(time.Hour + 11*time.Second))
	if s := h.Of("acme/web"); s[len(s)-1].P99 != 0 || s[len(s)-1].RPS != 0 {
		t.Errorf("a quiet interval: %+v", s[len(s)-1])
	}
}
