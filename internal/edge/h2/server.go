package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server serves HTTP/2 connections. Set its fields before the first
// ServeConn; they are not changed after.
type Server struct {
	Handler http.Handler
	// MaxConcurrentStreams is announced to clients; a stream beyond it is
	// refused (0: 250).
	MaxConcurrentStreams uint32
	// IdleTimeout closes a connection without streams for that long
	// (0: never).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header list, as HPACK counts it
	// (0: 1 MiB); a longer one is answered 431.
	MaxHeaderBytes int
	// ResetLimit is how many streams a client may reset within a second
	// before its connection is cut (HTTP/2 rapid reset, CVE-2023-44487);
	// OnAbuse, if set, is told (0: no limit).
	ResetLimit int
	OnAbuse    func(c net.Conn)
	// Direct, if set, is offered each request without a body before an
	// http.Request (or a goroutine) is made for it. It is called on the
	// connection's reader goroutine and must not block: it takes the
	// request (then answers it through the Stream, from any goroutine,
	// and calls Finish) or returns false having sent nothing, and Handler
	// serves the request.
	Direct func(s *Stream, r *Request) bool
	Log    *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	done     sync.WaitGroup
}

// Flow-control windows the server gives clients for request bodies: per
// stream, and per connection (all streams together). A body is read
// into the stream's buffer as it comes, so they also bound that buffer.
const (
	streamWindow = 1 << 20
	connWindow   = 1 << 20
)

// outMax bounds what a connection buffers to send: beyond it handlers
// wait (as they would on a full socket), so that a client not reading
// holds the server's memory no further.
const outMax = 256 << 10

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return 250
	}
	return s.MaxConcurrentStreams
}

func (s *Server) maxHeaderBytes() uint32 {
	if s.MaxHeaderBytes <= 0 {
		return 1 << 20
	}
	return uint32(s.MaxHeaderBytes)
}

// ServeConn serves c, whose client preface is still to be read, until
// the client or the server ends it; it returns when every handler it
// started has returned. A *tls.Conn's state goes to requests' TLS.
func (s *Server) ServeConn(c net.Conn) {
	cn := s.newConn(c)
	if cn == nil {
		c.Close()
		return
	}
	defer s.forget(cn)
	cn.serve()
}

func (s *Server) newConn(c net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	cn := &conn{
		s:         s,
		nc:        c,
		remote:    c.RemoteAddr().String(),
		streams:   make(map[uint32]*stream),
		sendWin:   65535,
		initWin:   65535,
		maxFrame:  16384,
		recvWin:   connWindow,
		maxHeader: s.maxHeaderBytes(),
	}
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cn.tls = &st
	}
	cn.ctx, cn.cancel = context.WithCancel(context.Background())
	// A TLS connection buffers its records already: frames are read from
	// it as they are, and an idle connection holds no read buffer of ours
	// (4 KiB less each). A plain one (h2c) gets one, for fewer syscalls.
	cn.br = c
	if cn.tls == nil {
		cn.br = bufio.NewReaderSize(c, 4<<10) // (larger reads bypass it)
	}
	cn.fr = http2.NewFramer(nil, cn.br)
	cn.hd = newBlockDecoder(cn.maxHeader)
	cn.fr.SetReuseFrames()
	cn.fr.SetMaxReadFrameSize(16384) // the default, not raised in SETTINGS
	cn.enc = hpack.NewEncoder(&cn.hbuf)
	s.conns[cn] = struct{}{}
	s.done.Add(1)
	return cn
}

func (s *Server) forget(cn *conn) {
	s.mu.Lock()
	delete(s.conns, cn)
	s.mu.Unlock()
	s.done.Done()
}

// Shutdown stops taking connections, sends every connection a GOAWAY
// and waits until their streams have ended or ctx is done; then it
// closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAwayGracefully()
	}
	done := make(chan struct{})
	go func() { s.done.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) logf(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Debug(msg, args...)
	}
}
