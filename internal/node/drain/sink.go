package drain

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Line is one line to ship, with what it came from.
type Line struct {
	Time    time.Time `json:"time"`
	App     string    `json:"app"`     // DOMAIN/APP
	Process string    `json:"process"` // web, worker, cron, run, release, postgresql, router
	Gear    string    `json:"gear"`    // the gear (a cron job's ID; "" for the router)
	Stream  string    `json:"stream"`  // stdout, stderr, gantry, access
	Text    string    `json:"message"`
	Host    string    `json:"host"` // the machine that shipped it
}

// Status is what a drain did, as `gantry drain list` shows it.
type Status struct {
	State     string // connecting, connected, retrying
	Sent      uint64
	Dropped   uint64
	Buffered  int
	LastError string
	Since     time.Time // of the state
}

// Sink ships lines to one drain from a bounded buffer.
type Sink struct {
	t        Target
	policy   Policy
	roots    *tls.Config
	max      int
	minRetry time.Duration
	maxRetry time.Duration

	mu      sync.Mutex
	q       []Line
	sending int // lines taken from q and not yet sent, requeued or refused
	st      Status
	unsaid  uint64 // dropped lines not yet said in the stream
	app     string // of the last line: the drop notice's
	host    string
	wake    chan struct{}
	stopped chan struct{}
}

// SinkOptions configure a sink.
type SinkOptions struct {
	Policy Policy
	Roots  *tls.Config // trusted roots (nil: the system's)
	Buffer int         // lines held while the drain is down (default 10000)
	// MinRetry and MaxRetry bound the back-off between attempts (default
	// 250ms and 10s).
	MinRetry, MaxRetry time.Duration
}

// NewSink makes a sink for t; Run ships.
func NewSink(t Target, o SinkOptions) *Sink {
	if o.Buffer <= 0 {
		o.Buffer = 10000
	}
	if o.MinRetry <= 0 {
		o.MinRetry = 250 * time.Millisecond
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = 10 * time.Second
	}
	return &Sink{t: t, policy: o.Policy, roots: o.Roots, max: o.Buffer, minRetry: o.MinRetry, maxRetry: o.MaxRetry,
		st: Status{State: "connecting", Since: time.Now()}, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// Send queues a line without blocking: beyond the buffer it is dropped
// and counted (the lines that waited longest go first when the drain is
// back).
func (s *Sink) Send(l Line) {
	s.mu.Lock()
	s.app, s.host = l.App, l.Host
	if len(s.q) >= s.max {
		s.st.Dropped++
		s.unsaid++
		s.mu.Unlock()
		return
	}
	s.q = append(s.q, l)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Status reports the sink's state and counts.
func (s *Sink) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Buffered = len(s.q) + s.sending // a batch on its way is still held
	return st
}

func (s *Sink) setState(state string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.State != state {
		s.st.State, s.st.Since = state, time.Now()
	}
	if err != nil {
		s.st.LastError = err.Error()
	}
}

// take waits for lines and returns up to n of them (a line that says how
// many were dropped first, when some were). It returns nil when ctx ends.
func (s *Sink) take(ctx context.Context, n int) []Line {
	for {
		s.mu.Lock()
		if len(s.q) > 0 || s.unsaid > 0 {
			var batch []Line
			if s.unsaid > 0 {
				batch = append(batch, Line{Time: time.Now().UTC(), Process: "drain", Stream: "gantry", App: s.app, Host: s.host,
					Text: fmt.Sprintf("%d lines were dropped while the drain could not take them (it buffers %d)", s.unsaid, s.max)})
				s.unsaid = 0
			}
			k := min(n, len(s.q))
			batch = append(batch, s.q[:k]...)
			s.q = append(s.q[:0:0], s.q[k:]...)
			s.sending = k
			s.mu.Unlock()
			return batch
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		}
	}
}

// requeue puts an unsent batch back in front (a line that said drops is
// counted as unsaid again); what no longer fits is dropped.
func (s *Sink) requeue(batch []Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = 0
	var lines []Line
	for _, l := range batch {
		if l.Process == "drain" && l.Stream == "gantry" {
			continue
		}
		lines = append(lines, l)
	}
	q := append(lines, s.q...)
	if over := len(q) - s.max; over > 0 { // the oldest stay, as in Send
		q = q[:s.max]
		s.st.Dropped += uint64(over)
		s.unsaid += uint64(over)
	}
	s.q = q
}

// sent counts a batch the drain took.
func (s *Sink) sent(n int) {
	s.mu.Lock()
	s.st.Sent += uint64(n)
	s.sending = 0
	s.mu.Unlock()
}

// Run ships until ctx ends, reconnecting with back-off.
func (s *Sink) Run(ctx context.Context) {
	defer close(s.stopped)
	delay := s.minRetry
	for ctx.Err() == nil {
		var err error
		if s.t.Kind == HTTPS {
			err = s.runHTTPS(ctx)
		} else {
			err = s.runSyslog(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err == errShipped {
			delay = s.minRetry
			continue
		}
		s.setState("retrying", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, s.maxRetry)
	}
}

// errShipped ends a connection that worked: the next one starts without
// waiting.
var errShipped = errors.New("reconnect")

func (s *Sink) runSyslog(ctx context.Context) error {
	raw, err := s.policy.Dialer(5*time.Second).DialContext(ctx, "tcp", s.t.Addr)
	if err != nil {
		return unwrapDial(err)
	}
	defer raw.Close()
	var conn net.Conn = raw
	if s.t.Kind == SyslogTLS {
		tc := tls.Client(raw, tlsConfig(s.roots, s.t.Host))
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return err
		}
		conn = tc
	}
	s.setState("connected", nil)
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	bw := bufio.NewWriterSize(conn, 64<<10)
	var buf []byte
	shipped := false
	for {
		batch := s.take(ctx, 500)
		if batch == nil {
			return ctx.Err()
		}
		// A syslog server never writes: anything readable is its close.
		if err := closed(raw); err != nil {
			s.requeue(batch)
			if shipped {
				return errShipped
			}
			return err
		}
		for _, l := range batch {
			buf = frame(buf[:0], l)
			bw.Write(buf)
		}
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := bw.Flush(); err != nil {
			s.requeue(batch)
			return err
		}
		shipped = true
		s.sent(len(batch))
	}
}

// closed reports whether the peer closed c (a read that does not time
// out at once).
func closed(c net.Conn) error {
	c.SetReadDeadline(time.Now())
	var one [1]byte
	_, err := c.Read(one[:])
	c.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err == nil || err == io.EOF {
		return errors.New("the drain closed the connection")
	}
	return err
}

// frame appends l as an RFC 5424 message with RFC 6587 octet counting:
// "LEN <PRI>1 TIME HOST APP PROCID MSGID - TEXT".
func frame(b []byte, l Line) []byte {
	pri := 8*23 + 6 // local7.info
	if l.Stream == "stderr" {
		pri = 8*23 + 3 // local7.err
	}
	var m []byte
	m = append(m, '<')
	m = strconv.AppendInt(m, int64(pri), 10)
	m = append(m, ">1 "...)
	m = l.Time.UTC().AppendFormat(m, "2006-01-02T15:04:05.000000Z")
	m = append(m, ' ')
	m = appendField(m, l.Host, 255)
	m = append(m, ' ')
	m = appendField(m, l.App, 48)
	m = append(m, ' ')
	proc := l.Process
	if l.Gear != "" {
		proc += "." + l.Gear
	}
	m = appendField(m, proc, 128)
	m = append(m, ' ')
	m = appendField(m, l.Stream, 32)
	m = append(m, " - "...)
	m = append(m, l.Text...)
	b = strconv.AppendInt(b, int64(len(m)), 10)
	b = append(b, ' ')
	return append(b, m...)
}

// appendField appends a header field: printable ASCII without spaces, at
// most n bytes, "-" when empty.
func appendField(b []byte, s string, n int) []byte {
	if s == "" {
		return append(b, '-')
	}
	k := 0
	for i := 0; i < len(s) && k < n; i++ {
		c := s[i]
		if c <= ' ' || c > '~' {
			c = '_'
		}
		b = append(b, c)
		k++
	}
	return b
}

func (s *Sink) runHTTPS(ctx context.Context) error {
	client := &http.Client{Timeout: 15 * time.Second,
		// A redirect could lead the lines to plain HTTP or elsewhere than
		// the URL the user gave: refused, as a failure of the drain.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the drain answered with a redirect: give its final URL")
		},
		Transport: &http.Transport{
			DialContext:     s.policy.Dialer(5 * time.Second).DialContext,
			TLSClientConfig: tlsConfig(s.roots, s.t.Host), ForceAttemptHTTP2: true,
			MaxIdleConns: 2, IdleConnTimeout: time.Minute, TLSHandshakeTimeout: 10 * time.Second}}
	defer client.CloseIdleConnections()
	first := true
	for {
		batch := s.take(ctx, 1000)
		if batch == nil {
			return ctx.Err()
		}
		body, _ := json.Marshal(batch)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.t.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "gantry-drain")
		resp, err := client.Do(req)
		if err != nil {
			s.requeue(batch)
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // without the URL, which may carry a token
			}
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
			s.requeue(batch)
			return fmt.Errorf("the drain answered %s", resp.Status)
		default: // it refuses these lines; sending them again would not help
			s.mu.Lock()
			s.st.Dropped += uint64(len(batch))
			s.sending = 0
			s.st.LastError = fmt.Sprintf("the drain refused %d lines: %s", len(batch), resp.Status)
			s.mu.Unlock()
			continue
		}
		if first {
			s.setState("connected", nil)
			first = false
		}
		s.sent(len(batch))
	}
}
