package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for raw, want := range map[string]string{
		"syslog://logs.example.com":             "syslog logs.example.com:514",
		"syslog+tls://logs.example.com":         "syslog+tls logs.example.com:6514",
		"syslog://10.1.2.3:1514":                "syslog 10.1.2.3:1514",
		"https://logs.example.com/in?token=abc": "https logs.example.com:443",
	} {
		tg, err := Parse(raw)
		if err != nil || tg.Kind+" "+tg.Addr != want {
			t.Errorf("Parse(%q) = %+v, %v; want %s", raw, tg, err, want)
		}
	}
	for raw, want := range map[string]string{
		"ftp://logs.example.com":          `unknown drain scheme "ftp"`,
		"http://logs.example.com/in":      "in the clear",
		"syslog://logs.example.com/path":  "HOST:PORT only",
		"logs.example.com:514":            "not a drain URL",
		"syslog://u:pw@logs.example.com/": "HOST:PORT only",
	} {
		if _, err := Parse(raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v; want %q", raw, err, want)
		}
		if _, err := Parse(raw); err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("Parse(%q) shows the password: %v", raw, err)
		}
	}
	if got := Redact("https://user:SECRET@logs.example.com/in?token=SECRET2&x=1"); strings.Contains(got, "SECRET") {
		t.Errorf("Redact left a secret: %s", got)
	}
}

func TestPolicy(t *testing.T) {
	p := Policy{}
	for _, ip := range []string{"127.0.0.1", "169.254.169.254", "0.0.0.0", "::1", "224.0.0.1"} {
		if err := p.Dialer(time.Second).Control("tcp4", net.JoinHostPort(ip, "514"), nil); err == nil {
			t.Errorf("%s is allowed", ip)
		}
	}
	if err := p.Dialer(time.Second).Control("tcp4", "10.1.2.3:514", nil); err != nil {
		t.Errorf("a private address is refused: %v", err)
	}
	if _, err := (Policy{AllowLoopback: true}).Dialer(time.Second).DialContext(context.Background(), "tcp", "127.0.0.1:1"); err != nil && strings.Contains(err.Error(), "may not reach") {
		t.Errorf("loopback refused with AllowLoopback: %v", err)
	}
}

// syslogServer collects octet-counted RFC 5424 messages on a port.
type syslogServer struct {
	t    *testing.T
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
	tls  *tls.Config
}

func startSyslog(t *testing.T, addr string, cfg *tls.Config) *syslogServer {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a stopped server may linger
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	s := &syslogServer{t: t, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.read(c)
		}
	}()
	return s
}

func (s *syslogServer) read(c net.Conn) {
	defer c.Close()
	go func() { // closing the listener ends its connections too
		for {
			time.Sleep(10 * time.Millisecond)
			if s.closed() {
				c.Close()
				return
			}
		}
	}()
	br := bufio.NewReader(c)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			s.t.Errorf("frame length %q", n)
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, string(msg))
		s.mu.Unlock()
	}
}

func (s *syslogServer) closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln == nil
}

func (s *syslogServer) stop() {
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	s.mu.Unlock()
	ln.Close()
}

func (s *syslogServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func line(i int) Line {
	return Line{Time: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), App: "acme/blog", Process: "worker", Gear: "ab12cd", Stream: "stdout", Text: fmt.Sprintf("line %d", i), Host: "m1"}
}

// Lines arrive framed as RFC 5424; while the server is down they wait in
// the buffer (beyond it they are dropped, counted and said), and arrive
// once it is back.
func TestSyslogSinkSurvivesRestart(t *testing.T) {
	srv := startSyslog(t, "127.0.0.1:0", nil)
	addr := srv.ln.Addr().String()
	tg, _ := Parse("syslog://" + addr)
	s := NewSink(tg, SinkOptions{Policy: Policy{AllowLoopback: true}, Buffer: 5, MinRetry: 20 * time.Millisecond, MaxRetry: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	s.Send(line(1))
	waitFor(t, "the first line", func() bool { return len(srv.got()) == 1 })
	if got, want := srv.got()[0], "<190>1 2026-12-05T10:00:00.000000Z m1 acme/blog worker.ab12cd stdout - line 1"; got != want {
		t.Errorf("message:\n%s\nwant:\n%s", got, want)
	}
	srv.stop()
	waitFor(t, "the sink sees the server gone", func() bool {
		s.Send(line(0)) // probes; it may or may not arrive
		time.Sleep(20 * time.Millisecond)
		return s.Status().State == "retrying"
	})
	for i := 2; i <= 12; i++ { // 11 lines, 5 kept
		s.Send(line(i))
	}
	if st := s.Status(); st.Buffered != 5 || st.Dropped < 6 {
		t.Errorf("while down: %+v; want 5 buffered, at least 6 dropped", st)
	}
	srv2 := startSyslog(t, addr, nil)
	defer srv2.stop()
	waitFor(t, "the buffered lines after the restart", func() bool { return len(srv2.got()) >= 6 })
	got := srv2.got()
	if !strings.Contains(got[0], "drain gantry - ") || !strings.Contains(got[0], "lines were dropped while the drain could not take them (it buffers 5)") {
		t.Errorf("the drops are not said first: %q", got[0])
	}
	last := -1
	for _, m := range got[1:] {
		_, n, _ := strings.Cut(m, " - line ")
		i, _ := strconv.Atoi(n)
		if i < last {
			t.Errorf("lines out of order: %q", got)
		}
		last = i
	}
	if st := s.Status(); st.State != "connected" || st.Buffered != 0 {
		t.Errorf("after the restart: %+v", st)
	}
}

func TestSyslogTLSSink(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil) // for its certificate
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	ts.Close()
	srv := startSyslog(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	defer srv.stop()
	_, port, _ := net.SplitHostPort(srv.ln.Addr().String())
	tg, _ := Parse("syslog+tls://127.0.0.1:" + port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Check(ctx, tg, Policy{AllowLoopback: true}, nil); err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Errorf("Check against an untrusted certificate: %v", err)
	}
	rootsCfg := &tls.Config{RootCAs: roots}
	if err := Check(ctx, tg, Policy{AllowLoopback: true}, rootsCfg); err != nil {
		t.Fatal(err)
	}
	s := NewSink(tg, SinkOptions{Policy: Policy{AllowLoopback: true}, Roots: rootsCfg})
	go s.Run(ctx)
	s.Send(line(1))
	waitFor(t, "a line over TLS", func() bool { return len(srv.got()) == 1 })
}

// runHTTPSSink runs a sink to ts at path (with a query) until the test ends.
func runHTTPSSink(t *testing.T, ts *httptest.Server, path string) *Sink {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	tg, err := Parse(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSink(tg, SinkOptions{Policy: Policy{AllowLoopback: true}, Roots: &tls.Config{RootCAs: roots}, MinRetry: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-s.stopped })
	go s.Run(ctx)
	return s
}

// HTTPS drains get JSON batches; a 500 is retried, the lines kept.
func TestHTTPSSink(t *testing.T) {
	var mu sync.Mutex
	var got []Line
	fail := 1
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		var batch []Line
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("batch: %v", err)
		}
		got = append(got, batch...)
	}))
	defer ts.Close()
	s := runHTTPSSink(t, ts, "/ingest?token=x")
	for i := 1; i <= 3; i++ {
		s.Send(line(i))
	}
	waitFor(t, "three lines after a retry", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if got[0].Text != "line 1" || got[0].App != "acme/blog" || got[0].Process != "worker" || got[0].Gear != "ab12cd" {
		t.Errorf("first line %+v", got[0])
	}
}

// Send never blocks, whatever the drain does.
func TestSendNeverBlocks(t *testing.T) {
	tg, _ := Parse("syslog://192.0.2.1:514") // TEST-NET: nothing answers
	s := NewSink(tg, SinkOptions{Buffer: 100})
	start := time.Now()
	for i := 0; i < 100000; i++ {
		s.Send(line(i))
	}
	if st := s.Status(); st.Buffered != 100 || st.Dropped != 99900 {
		t.Errorf("status %+v", st)
	}
	t.Logf("100000 sends in %s", time.Since(start))
}

// An HTTPS drain that redirects is not followed: its lines stay queued.
func TestHTTPSSinkRefusesRedirects(t *testing.T) {
	var hits sync.Map
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer ts.Close()
	s := runHTTPSSink(t, ts, "/ingest?token=SECRET")
	s.Send(line(1))
	waitFor(t, "the redirect refused", func() bool { return strings.Contains(s.Status().LastError, "redirect") })
	if _, ok := hits.Load("/elsewhere"); ok {
		t.Error("the redirect was followed")
	}
	if st := s.Status(); st.Sent != 0 || st.Buffered != 1 || strings.Contains(st.LastError, "SECRET") {
		t.Errorf("status %+v; want the line kept, and no token in the error", st)
	}
}

// A batch on its way still counts as buffered: `gantry drain list` never
// shows held lines as gone while a retry is in flight.
func TestBufferedCountsTheBatchInFlight(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	defer close(release)
	s := runHTTPSSink(t, ts, "/ingest")
	s.Send(line(1))
	s.Send(line(2))
	<-arrived
	if st := s.Status(); st.Buffered != 2 || st.Sent != 0 {
		t.Errorf("while the batch is in flight: %+v; want 2 buffered", st)
	}
	release <- struct{}{}
	waitFor(t, "the retry", func() bool { return strings.Contains(s.Status().LastError, "503") })
	if st := s.Status(); st.Buffered != 2 {
		t.Errorf("after a 503: %+v; want 2 buffered", st)
	}
}
