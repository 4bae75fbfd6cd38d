// Package drain ships apps' log lines to log drains: syslog over TCP or
// TLS (RFC 5424 messages, RFC 6587 octet counting) and HTTPS endpoints
// (JSON batches). Each machine ships the lines of its own gears and of its
// router; each drain has a bounded buffer, so a drain that is down is
// retried with back-off and never slows an app: lines beyond the buffer
// are dropped, counted and said.
package drain

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Kinds of drains.
const (
	Syslog    = "syslog"     // RFC 5424 over TCP, octet counting
	SyslogTLS = "syslog+tls" // the same over TLS
	HTTPS     = "https"      // JSON batches, POSTed
)

// Target is a parsed drain URL.
type Target struct {
	Kind string
	Host string // without port: the TLS server name
	Addr string // host:port
	URL  string // the whole URL (HTTPS)
}

// Parse reads a drain URL: syslog://HOST[:514], syslog+tls://HOST[:6514]
// or https://HOST[:443]/PATH.
func Parse(raw string) (Target, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return Target{}, fmt.Errorf("%q is not a drain URL: use syslog://HOST:514, syslog+tls://HOST:6514 or https://HOST/PATH", Redact(raw))
	}
	t := Target{Kind: strings.ToLower(u.Scheme), Host: u.Hostname(), URL: u.String()}
	port := u.Port()
	switch t.Kind {
	case Syslog:
		port = orDefault(port, "514")
	case SyslogTLS:
		port = orDefault(port, "6514")
	case HTTPS:
		port = orDefault(port, "443")
	case "http":
		return Target{}, fmt.Errorf("a drain over plain http would send the app's logs in the clear: use https://")
	default:
		return Target{}, fmt.Errorf("unknown drain scheme %q: use syslog://HOST:514, syslog+tls://HOST:6514 or https://HOST/PATH", u.Scheme)
	}
	if t.Kind != HTTPS && (u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil) {
		return Target{}, fmt.Errorf("a syslog drain is HOST:PORT only (no path, query or user): %s", Redact(raw))
	}
	t.Addr = net.JoinHostPort(t.Host, port)
	return t, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Redact hides what a drain URL may carry as a secret: the password of
// its user and the values of its query.
func Redact(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "(a URL that does not parse)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q.Set(k, "xxxxx")
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Policy says which addresses drains may reach: never loopback,
// link-local (cloud metadata lives there), multicast or unspecified
// addresses, unless AllowLoopback (tests). Gear addresses are refused too
// (Forbidden).
type Policy struct {
	AllowLoopback bool
	Forbidden     []netip.Prefix
}

func (p Policy) check(ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback() && !p.AllowLoopback, ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsMulticast(), ip.IsUnspecified():
		return fmt.Errorf("a drain may not reach %s (loopback, link-local or unspecified address)", ip)
	}
	for _, f := range p.Forbidden {
		if f.Contains(ip) {
			return fmt.Errorf("a drain may not reach %s (in %s, the platform's own network)", ip, f)
		}
	}
	return nil
}

// Dialer connects to targets, checking each resolved address against the
// policy (so a name that later resolves elsewhere is checked again).
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			return p.check(ap.Addr())
		}}
}

// Check connects to a target once (TCP, and the TLS handshake for TLS
// and HTTPS) to tell a user at once that a drain cannot be reached.
func Check(ctx context.Context, t Target, p Policy, roots *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := p.Dialer(5*time.Second).DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return fmt.Errorf("the drain %s cannot be reached: %v", t.Addr, unwrapDial(err))
	}
	defer c.Close()
	if t.Kind == Syslog {
		return nil
	}
	tc := tls.Client(c, tlsConfig(roots, t.Host))
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("the drain %s does not complete a TLS handshake: %v", t.Addr, err)
	}
	return nil
}

func unwrapDial(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}

func tlsConfig(base *tls.Config, host string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		c = base.Clone()
	}
	c.ServerName = host
	return c
}
