// Package metrics holds Gantry's Prometheus registry (its own, not the
// global one) and the metrics that several roles report. Labels are
// bounded: an app label is DOMAIN/NAME of an existing app.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the platform's registry and its metrics.
type Metrics struct {
	Registry *prometheus.Registry
	// ScaleEvents counts scale, idle and wake decisions per app and kind.
	ScaleEvents *prometheus.CounterVec
	// EgressRefused counts newly refused outbound destinations per app;
	// PortScans the suspected port scans.
	EgressRefused *prometheus.CounterVec
	PortScans     *prometheus.CounterVec
	// AppEvents counts the other events of apps (cron runs, snapshots,
	// restores…) by kind; Backups the scheduled backups by result.
	AppEvents *prometheus.CounterVec
	Backups   *prometheus.CounterVec
}

// New creates the registry with Go runtime and process metrics.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		ScaleEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_scale_events_total",
			Help: "Scale, idle and wake decisions, by app and kind.",
		}, []string{"app", "kind"}),
	}
	m.EgressRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_egress_refused_total",
		Help: "Outbound destinations refused by an app's egress policy (each new destination and each repeat within a check)."}, []string{"app"})
	m.PortScans = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_egress_port_scans_total",
		Help: "Suspected port scans (many distinct refused destinations in a short window), by app."}, []string{"app"})
	m.AppEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_app_events_total",
		Help: "Events of apps other than scaling and port scans (cron runs, snapshots, restores…), by app and kind."}, []string{"app", "kind"})
	m.Backups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_backups_total",
		Help: "Scheduled backups, by app and result (ok, failed): a failed one is never silent."}, []string{"app", "result"})
	r.MustRegister(m.ScaleEvents, m.EgressRefused, m.PortScans, m.AppEvents, m.Backups)
	return m
}

// AppGauge reports a per-app value read at scrape time.
func (m *Metrics) AppGauge(name, help string, read func() map[string]float64) {
	m.Registry.MustRegister(&appGauge{desc: prometheus.NewDesc(name, help, []string{"app"}, nil), read: read})
}

type appGauge struct {
	desc *prometheus.Desc
	read func() map[string]float64
}

func (g *appGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *appGauge) Collect(ch chan<- prometheus.Metric) {
	for app, v := range g.read() {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, app)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
