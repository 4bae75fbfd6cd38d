package router

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

func (r *Router) tlsConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: r.getCertificate,
	}
	if r.o.ACME != nil {
		c.NextProtos = append(c.NextProtos, "acme-tls/1") // TLS-ALPN-01 validation
	}
	return c
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

// acceptTLS hands connections to the HTTPS server; when TLS passthrough
// routes exist it first peeks at the ClientHello and splices those by SNI
// straight to their gears, without terminating TLS.
func (r *Router) acceptTLS(ln net.Listener, q *httpfast.ConnQueue) {
	defer q.Close()
	r.guard.Serve(ln, "https", func(c net.Conn) {
		if len(r.table.Load().SNI) == 0 {
			q.Push(c)
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
		q.Push(pc)
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
