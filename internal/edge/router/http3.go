package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"
)

// HTTP/3: the same handler over QUIC on the HTTPS port's UDP twin, for
// apps, aliases and the platform host alike (the certificate is chosen by
// SNI as over TCP). Clients learn of it from the Alt-Svc header on HTTPS
// responses. 0-RTT is off: a replayed early request could repeat a
// non-idempotent one at an app.

// listenUDP opens the UDP socket beside the HTTPS listener, with
// SO_REUSEPORT so that a SIGHUP hand-off's new process can bind it too
// (QUIC connections in flight at the hand-off may have to reconnect).
func listenUDP(addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(context.Background(), "udp", addr)
}

func (r *Router) h3Server() *http3.Server {
	tc := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: r.getCertificate}
	r.h3Conf = tc // each handshake gets a copy of it, with its ticket keys
	return &http3.Server{
		Handler:        http.HandlerFunc(r.serveH3),
		TLSConfig:      http3.ConfigureTLSConfig(tc),
		MaxHeaderBytes: r.o.MaxHeaderBytes,
		IdleTimeout:    r.o.IdleTimeout,
		QUICConfig: &quic.Config{
			Allow0RTT:             false,
			MaxIdleTimeout:        max(r.o.IdleTimeout, 30*time.Second),
			MaxIncomingStreams:    250,
			MaxIncomingUniStreams: 10,
			KeepAlivePeriod:       0,
		},
	}
}

// serveH3 serves an HTTP/3 request as any other (the WebSocket upgrade
// has no HTTP/3 form here: browsers use HTTP/1.1 or h2 for those).
func (r *Router) serveH3(w http.ResponseWriter, req *http.Request) {
	r.ServeHTTP(w, req)
}

// altSvc is the Alt-Svc value HTTPS responses advertise HTTP/3 with
// ("" without it).
func (r *Router) altSvc() string {
	if r.udp == nil {
		return ""
	}
	ua, ok := r.udp.LocalAddr().(*net.UDPAddr)
	if !ok {
		return ""
	}
	return fmt.Sprintf(`h3=":%s"; ma=86400`, strconv.Itoa(ua.Port))
}
