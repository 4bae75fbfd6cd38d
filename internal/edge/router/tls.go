package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

func (r *Router) tlsConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: r.getCertificate,
	}
	if r.o.ACME != nil {
		c.NextProtos = append(c.NextProtos, acmeALPN) // TLS-ALPN-01 validation
	}
	return c
}

const acmeALPN = "acme-tls/1"

// serveTLS terminates TLS on a connection of the HTTPS port and serves it
// by the protocol the client chose: h2 through the rapid-reset guard,
// HTTP/1.1 on the fast path like plain HTTP (net/http gets what the fast
// path hands off, with the TLS state, from q).
func (r *Router) serveTLS(c net.Conn, q *httpfast.ConnQueue, s *http.Server) {
	tc := tls.Server(c, r.tlsConf)
	c.SetDeadline(time.Now().Add(r.o.HeaderTimeout))
	if err := tc.Handshake(); err != nil {
		r.log.Debug("TLS handshake failed", "client", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	// The handshake grew this goroutine's stack (key exchange, signature:
	// 16-32 KiB), and a goroutine keeps its stack while it waits: the
	// connection is served, and waits when idle, on a new one that grows
	// only as far as serving needs (an idle HTTP/2 connection: 31 -> 22
	// KiB in bench/router; the guard's slot goes with the connection's
	// Close, not with this goroutine).
	switch tc.ConnectionState().NegotiatedProtocol {
	case http2.NextProtoTLS:
		go r.h2.ServeConn(tc)
	case acmeALPN: // the handshake was the validation
		tc.Close()
	default:
		go r.serveFast(tc, q, true)
	}
}

// tlsStateKey carries a handed-off connection's TLS state into its
// requests: net/http sees a wrapped connection, not a *tls.Conn.
type tlsStateKey struct{}

func tlsConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*httpfast.PrefixConn); ok {
		if tc, ok := pc.Conn.(*tls.Conn); ok {
			st := tc.ConnectionState()
			return context.WithValue(ctx, tlsStateKey{}, &st)
		}
	}
	return ctx
}

// serveHandedTLS serves a request the TLS fast path handed off.
func (r *Router) serveHandedTLS(w http.ResponseWriter, req *http.Request) {
	if req.TLS == nil {
		req.TLS, _ = req.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
	}
	r.ServeHTTP(w, req)
}

// Session tickets let a returning client skip the full handshake. Their
// keys are the router's own, random, and rotated: a new one every
// ticketRotation, the older ones still accepted until ticketKeys are in
// use, so a ticket lives at most a day and a stolen key opens no more.
const (
	ticketRotation = time.Hour
	ticketKeys     = 24
)

type ticketRing struct {
	mu   sync.Mutex
	keys [][32]byte
}

// rotate puts a new key first and gives it to every config.
func (t *ticketRing) rotate(confs ...*tls.Config) {
	var k [32]byte
	rand.Read(k[:])
	t.mu.Lock()
	t.keys = append([][32]byte{k}, t.keys...)
	if len(t.keys) > ticketKeys {
		t.keys = t.keys[:ticketKeys]
	}
	keys := slices.Clone(t.keys)
	t.mu.Unlock()
	for _, c := range confs {
		if c != nil {
			c.SetSessionTicketKeys(keys)
		}
	}
}

func (r *Router) rotateTickets(ctx context.Context, confs ...*tls.Config) {
	tick := time.NewTicker(ticketRotation)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.tickets.rotate(confs...)
		}
	}
}

// getCertificate picks the certificate by SNI: an alias's own (uploaded or
// ACME), else the platform CA's for routed names of the cloud domain and
// the platform host. Names nobody routes get none: a client cannot make
// the router issue certificates for names of its choosing.
func (r *Router) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	t := r.table.Load()
	rt := t.Lookup(name)
	if rt != nil && rt.Cert != nil {
		return rt.Cert, nil
	}
	platform := name == "" || r.platform[name] || net.ParseIP(name) != nil
	if r.o.Certs != nil && (rt != nil || platform) {
		if name == "" || platform && !r.o.Certs.Covers(name) {
			name = r.platformName() // no SNI, or an address as SNI
		}
		if r.o.Certs.Covers(name) {
			if platform {
				return r.o.Certs.Certificate(name, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
			}
			return r.o.Certs.Certificate(name)
		}
	}
	if rt != nil && rt.Alias && r.o.ACME != nil {
		return r.o.ACME.GetCertificate(hello)
	}
	r.obs.tlsErrors.Inc()
	if rt != nil {
		return nil, fmt.Errorf("no certificate for %s yet: upload one with `gantry alias cert`", name)
	}
	return nil, fmt.Errorf("no app is served at %q", name)
}

// platformName is the name served to clients that send no SNI (an IP
// address): the first platform host the CA covers.
func (r *Router) platformName() string {
	for _, h := range r.o.PlatformHosts {
		if r.o.Certs.Covers(h) {
			return h
		}
	}
	return "localhost"
}

// acceptTLS serves the HTTPS port; when TLS passthrough routes exist it
// first peeks at the ClientHello and splices those by SNI straight to
// their gears, without terminating TLS.
func (r *Router) acceptTLS(ln net.Listener, q *httpfast.ConnQueue, s *http.Server) {
	defer q.Close()
	r.guard.Serve(ln, "https", func(c net.Conn) {
		if len(r.table.Load().SNI) == 0 {
			r.serveTLS(c, q, s)
			return
		}
		name, prefix, err := peekSNI(c, r.o.HeaderTimeout)
		if err != nil {
			c.Close()
			return
		}
		pc := &httpfast.PrefixConn{Conn: c, Prefix: prefix}
		if tr := r.table.Load().SNI[name]; tr != nil {
			r.serveTCP(pc, tr.Port, name)
			return
		}
		r.serveTLS(pc, q, s)
	})
}

// peekSNI reads a TLS ClientHello and returns its server name and the
// bytes read, to be replayed. It parses with crypto/tls itself: the
// handshake stops at the hello.
func peekSNI(c net.Conn, timeout time.Duration) (string, []byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var buf bytes.Buffer
	var name string
	var got bool
	err := tls.Server(readOnly{io.TeeReader(c, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name, got = strings.ToLower(strings.TrimSuffix(h.ServerName, ".")), true
			return nil, errPeeked
		},
	}).Handshake()
	if !got {
		return "", nil, err
	}
	return name, buf.Bytes(), nil
}

// readOnly is a net.Conn that only reads (the peek never answers).
type readOnly struct{ r io.Reader }

func (c readOnly) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (readOnly) Write(p []byte) (int, error)        { return 0, io.ErrClosedPipe }
func (readOnly) Close() error                       { return nil }
func (readOnly) LocalAddr() net.Addr                { return nil }
func (readOnly) RemoteAddr() net.Addr               { return nil }
func (readOnly) SetDeadline(t time.Time) error      { return nil }
func (readOnly) SetReadDeadline(t time.Time) error  { return nil }
func (readOnly) SetWriteDeadline(t time.Time) error { return nil }

// certCache parses stored certificates once per content.
type certCache struct {
	mu    sync.Mutex
	pairs map[[32]byte]*tls.Certificate
}

func (c *certCache) parse(sc *Cert) *tls.Certificate {
	h := sha256.Sum256([]byte(sc.CertPEM + "\x00" + sc.KeyPEM))
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pairs[h]; ok {
		return p
	}
	if c.pairs == nil {
		c.pairs = map[[32]byte]*tls.Certificate{}
	}
	pair, err := tls.X509KeyPair([]byte(sc.CertPEM), []byte(sc.KeyPEM))
	if err != nil {
		c.pairs[h] = nil // checked at upload; a bad record serves nothing
		return nil
	}
	c.pairs[h] = &pair
	return &pair
}
