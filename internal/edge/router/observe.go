package router

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/accesslog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-paas/gantry/internal/edge/connguard"
)

// appStats is an app's live concurrency, last activity and its metric
// handles (looked up once per app, not per request).
type appStats struct {
	active atomic.Int64
	last   atomic.Int64 // unix nanoseconds

	metricsOnce sync.Once
	app         string
	codes       [6]prometheus.Counter // 1xx..5xx, [0] other
	latency     prometheus.Observer
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	websockets  prometheus.Gauge
	tcpConns    prometheus.Counter
}

func (s *appStats) begin() { s.active.Add(1); s.last.Store(time.Now().UnixNano()) }
func (s *appStats) end()   { s.active.Add(-1); s.last.Store(time.Now().UnixNano()) }

// statsOf returns the app's stats; app (DOMAIN/NAME) labels its metrics.
func (r *Router) statsOf(appKey, app string) *appStats {
	r.statsMu.Lock()
	s := r.stats[appKey]
	if s == nil {
		s = &appStats{}
		r.stats[appKey] = s
	}
	r.statsMu.Unlock()
	if app != "" {
		s.metricsOnce.Do(func() { r.obs.bind(s, app) })
	}
	return s
}

// observer writes the access log and holds the router's metrics.
type observer struct {
	log *accesslog.Writer // nil: no access log
	tap AccessTap         // nil: no app's access lines go elsewhere

	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	ws        *prometheus.GaugeVec
	tcp       *prometheus.CounterVec
	tlsErrors prometheus.Counter
	refused   *prometheus.CounterVec
}

func newObserver(w io.Writer, reg prometheus.Registerer) *observer {
	o := &observer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_http_requests_total",
			Help: "HTTP requests through the router, by app and status class."}, []string{"app", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gantry_http_request_duration_seconds",
			Help:    "Time from request to the end of the response (WebSockets: to their close), by app.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"app"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_http_bytes_total",
			Help: "Body bytes through the router, by app and direction (in: from clients, out: to clients)."}, []string{"app", "direction"}),
		ws: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gantry_websocket_connections",
			Help: "Open WebSocket connections, by app."}, []string{"app"}),
		tcp: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_tcp_connections_total",
			Help: "Connections through TCP routes, by app."}, []string{"app"}),
		tlsErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_tls_handshake_errors_total",
			Help: "TLS handshakes that failed (no certificate for the name, bad clients)."}),
		refused: connguard.NewRefusedCounter("gantry_router_connections_refused_total",
			"Connections the router refused or failed to accept, by listener and reason (per-source: the client address held too many; descriptors: the process ran out)."),
	}
	o.log = accesslog.New(w)
	if reg != nil {
		reg.MustRegister(o.requests, o.latency, o.bytes, o.ws, o.tcp, o.tlsErrors, o.refused)
	}
	return o
}

func (o *observer) bind(s *appStats, app string) {
	s.app = app
	for i, c := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		s.codes[i] = o.requests.WithLabelValues(app, c)
	}
	s.latency = o.latency.WithLabelValues(app)
	s.bytesIn = o.bytes.WithLabelValues(app, "in")
	s.bytesOut = o.bytes.WithLabelValues(app, "out")
	s.websockets = o.ws.WithLabelValues(app)
	s.tcpConns = o.tcp.WithLabelValues(app)
}

// AccessTap takes the access lines of apps that ship their logs (log
// drains). Drained is called per request and must not block.
type AccessTap interface {
	Drained(app string) bool
	Access(app string, line []byte)
}

// entry is a request of s's access entry to fill, or nil when nothing
// takes its line: neither the access log nor the app's drains (asked
// once per request).
func (o *observer) entry(s *appStats) *accessEntry {
	drained := o.tap != nil && s != nil && o.tap.Drained(s.app)
	if o.log == nil && !drained {
		return nil
	}
	return &accessEntry{drained: drained}
}

// accessEntry is what an access log line says of a request.
type accessEntry struct {
	host, method, path, proto, remote string
	drained                           bool // its app ships its lines (AccessTap)
}

// record counts a finished request and writes its access log line. The
// path is logged without its query string, which may carry secrets.
func (o *observer) record(req *http.Request, s *appStats, start time.Time, status int, in, out int64, gear string) {
	e := o.entry(s)
	if e != nil {
		e.host, e.method, e.path, e.proto, e.remote = req.Host, req.Method, req.URL.Path, req.Proto, req.RemoteAddr
	}
	o.recordEntry(s, e, start, status, in, out, gear)
}

// recordEntry counts a request in the app's metrics and logs e (nil when
// there is no access log).
func (o *observer) recordEntry(s *appStats, e *accessEntry, start time.Time, status int, in, out int64, gear string) {
	d := time.Since(start)
	app := "-"
	if s != nil {
		app = s.app
		c := status / 100
		if c < 1 || c > 5 {
			c = 0
		}
		s.codes[c].Inc()
		s.latency.Observe(d.Seconds())
		if in > 0 {
			s.bytesIn.Add(float64(in))
		}
		if out > 0 {
			s.bytesOut.Add(float64(out))
		}
	}
	if e == nil {
		return
	}
	if gear == "" {
		gear = "-"
	}
	o.log.Line(func(b []byte) []byte {
		return appendRequest(b, start, d, app, e, status, out, gear)
	})
	if e.drained {
		o.tap.Access(app, appendRequest(nil, start, d, app, e, status, out, gear))
	}
}

func appendRequest(b []byte, start time.Time, d time.Duration, app string, e *accessEntry, status int, out int64, gear string) []byte {
	b = start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, " app="...)
	b = append(b, app...)
	b = append(b, " host="...)
	b = strconv.AppendQuote(b, e.host)
	b = append(b, " method="...)
	b = append(b, e.method...)
	b = append(b, " path="...)
	b = strconv.AppendQuote(b, e.path)
	b = append(b, " proto="...)
	b = append(b, e.proto...)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, out, 10)
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
	b = append(b, " gear="...)
	b = append(b, gear...)
	b = append(b, " client="...)
	return append(b, e.remote...)
}

// rawPage writes one of the router's pages on a connection of the fast
// path (plain text; the connection closes after it) and records it.
func (o *observer) rawPage(c net.Conn, s *appStats, start time.Time, e *accessEntry, status int, title, msg string) {
	page, body := rawPage(status, title, msg)
	c.Write(page)
	o.recordEntry(s, e, start, status, 0, int64(body), "")
}

// rawPage is a whole response with the router's page for status, and
// the length of its body.
func rawPage(status int, title, msg string) ([]byte, int) {
	body := strconv.Itoa(status) + " " + title + ": " + msg + "\n"
	return []byte("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body), len(body)
}

// recordTCP writes a TCP connection's access log line.
func (o *observer) recordTCP(s *appStats, route string, client string, start time.Time, in, out int64, member string, err error) {
	if s != nil {
		s.tcpConns.Inc()
		s.bytesIn.Add(float64(in))
		s.bytesOut.Add(float64(out))
	}
	o.log.Line(func(b []byte) []byte { return appendTCP(b, s, route, client, start, in, out, member, err) })
	if o.tap != nil && s != nil && o.tap.Drained(s.app) {
		o.tap.Access(s.app, appendTCP(nil, s, route, client, start, in, out, member, err))
	}
}

func appendTCP(b []byte, s *appStats, route string, client string, start time.Time, in, out int64, member string, err error) []byte {
	b = start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, " app="...)
	if s != nil {
		b = append(b, s.app...)
	}
	b = append(b, " tcp="...)
	b = append(b, route...)
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, in, 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, out, 10)
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(time.Since(start).Microseconds())/1000, 'f', 3, 64)
	b = append(b, " gear="...)
	if member == "" {
		member = "-"
	}
	b = append(b, member...)
	b = append(b, " client="...)
	b = append(b, client...)
	if err != nil {
		b = append(b, " error="...)
		b = strconv.AppendQuote(b, err.Error())
	}
	return b
}

// page answers with one of the router's own pages and records it.
func (o *observer) page(w http.ResponseWriter, req *http.Request, s *appStats, start time.Time, status int, title, msg string) {
	n := page(w, req, status, title, msg)
	o.record(req, s, start, status, 0, int64(n), "")
}

var recorders = sync.Pool{New: func() any { return new(accesslog.Recorder) }}

// countingBody counts request body bytes (atomically: the transport may
// still be sending the body when the response is done).
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
