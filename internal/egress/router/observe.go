package router

import (
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/accesslog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-paas/gantry/internal/edge/connguard"
)

// entry is what the access log and the metrics say of one connection or
// proxied request.
type entry struct {
	app, mode, dest, method string
	gear                    netip.Addr
	start                   time.Time
	result                  string // ok, denied, failed
	status                  int    // proxy mode
	out, in                 int64  // bytes to and from the destination
	err                     error
}

type observer struct {
	log *accesslog.Writer // nil: no access log

	conns   *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newObserver(w io.Writer, reg prometheus.Registerer) *observer {
	o := &observer{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_egress_router_connections_total",
			Help: "Connections and proxied requests through the egress router, by app, mode (proxy, redirect, tcp), destination and result (ok, denied, failed)."},
			[]string{"app", "mode", "destination", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_egress_router_bytes_total",
			Help: "Bytes through the egress router, by app, mode and direction (out: to the destination, in: from it)."},
			[]string{"app", "mode", "direction"}),
		refused: connguard.NewRefusedCounter("gantry_egress_router_connections_refused_total",
			"Connections the egress router refused or failed to accept, by listener and reason (per-source: the gear held too many; descriptors: the process ran out)."),
	}
	o.log = accesslog.New(w)
	if reg != nil {
		reg.MustRegister(o.conns, o.bytes, o.refused)
	}
	return o
}

func (o *observer) record(e *entry) {
	app := e.app
	if app == "" {
		app = "-"
	}
	dest := e.dest
	if dest == "" {
		dest = "-"
	}
	o.conns.WithLabelValues(app, e.mode, dest, e.result).Inc()
	if e.out > 0 {
		o.bytes.WithLabelValues(app, e.mode, "out").Add(float64(e.out))
	}
	if e.in > 0 {
		o.bytes.WithLabelValues(app, e.mode, "in").Add(float64(e.in))
	}
	o.log.Line(func(b []byte) []byte { return appendEntry(b, e, app, dest) })
}

func appendEntry(b []byte, e *entry, app, dest string) []byte {
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, " app="...)
	b = append(b, app...)
	b = append(b, " mode="...)
	b = append(b, e.mode...)
	b = append(b, " gear="...)
	b = append(b, e.gear.String()...)
	if e.method != "" {
		b = append(b, " method="...)
		b = append(b, e.method...)
	}
	b = append(b, " dest="...)
	b = strconv.AppendQuote(b, dest)
	b = append(b, " result="...)
	b = append(b, e.result...)
	if e.status != 0 {
		b = append(b, " status="...)
		b = strconv.AppendInt(b, int64(e.status), 10)
	}
	b = append(b, " bytes_out="...)
	b = strconv.AppendInt(b, e.out, 10)
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, e.in, 10)
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(time.Since(e.start).Microseconds())/1000, 'f', 3, 64)
	if e.err != nil {
		b = append(b, " error="...)
		b = strconv.AppendQuote(b, e.err.Error())
	}
	return b
}
