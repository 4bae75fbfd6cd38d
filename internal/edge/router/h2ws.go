package router

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// WebSockets over HTTP/2 (RFC 8441): a browser on an h2 connection opens
// a WebSocket as a stream, with an extended CONNECT (":protocol:
// websocket"), instead of a TCP connection of its own. Gears speak
// HTTP/1.1: the router turns the CONNECT into an Upgrade request on a
// connection of its own to the gear (the platform's handler gets one
// through a pipe), the gear's 101 into a 200, and then copies the
// stream's body to the connection and the connection to the stream.

// isExtendedConnect says whether req opens a WebSocket over h2.
func isExtendedConnect(req *http.Request) bool {
	return req.Method == http.MethodConnect && req.ProtoMajor == 2 && strings.EqualFold(req.Header.Get(":protocol"), "websocket")
}

// upgradeHead renders the HTTP/1.1 Upgrade request for an extended
// CONNECT, with the forwarded headers set as for any request.
func (r *Router) upgradeHead(req *http.Request) []byte {
	h := req.Header.Clone()
	for _, k := range []string{":protocol", "Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Sec-Websocket-Key"} {
		h.Del(k)
	}
	r.setForwarded(req, h)
	var key [16]byte
	rand.Read(key[:])
	h.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key[:]))
	if h.Get("Sec-WebSocket-Version") == "" {
		h.Set("Sec-WebSocket-Version", "13")
	}
	var b strings.Builder
	b.WriteString("GET " + req.URL.RequestURI() + " HTTP/1.1\r\nHost: " + req.Host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
	h.Write(&b)
	b.WriteString("\r\n")
	return []byte(b.String())
}

// h2WebSocket serves an extended CONNECT over conn (to the gear, or to
// the platform's handler). It returns the status sent and the bytes
// carried each way.
func (r *Router) h2WebSocket(w http.ResponseWriter, req *http.Request, conn net.Conn, idle time.Duration) (status int, in, out int64) {
	conn.SetDeadline(time.Now().Add(r.o.HeaderTimeout))
	if _, err := conn.Write(r.upgradeHead(req)); err != nil {
		conn.Close()
		return http.StatusBadGateway, 0, 0
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		conn.Close()
		page(w, req, http.StatusBadGateway, "App not responding", "The app at "+hostOnly(req.Host)+" did not answer the WebSocket request.")
		return http.StatusBadGateway, 0, 0
	}
	conn.SetDeadline(time.Time{})
	if resp.StatusCode < 300 && resp.StatusCode != http.StatusSwitchingProtocols {
		// A 2xx would tell the client its WebSocket is open.
		conn.Close()
		page(w, req, http.StatusBadGateway, "Not a WebSocket", "The app at "+hostOnly(req.Host)+" answered the WebSocket request without accepting it.")
		return http.StatusBadGateway, 0, 0
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The app refused the WebSocket (403, 404…): its answer as is.
		defer conn.Close()
		for k, vs := range resp.Header {
			if k != "Connection" && k != "Upgrade" && k != "Transfer-Encoding" && k != "Keep-Alive" {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(resp.StatusCode)
		n, _ := io.Copy(w, resp.Body)
		return resp.StatusCode, 0, n
	}
	for _, k := range []string{"Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		conn.Close()
		return http.StatusOK, 0, 0
	}
	s := &streamConn{body: req.Body, w: w, rc: rc, local: conn.LocalAddr(), remote: conn.RemoteAddr()}
	var g net.Conn = conn
	if n := br.Buffered(); n > 0 { // bytes the app sent right after its 101
		b, _ := br.Peek(n)
		g = &httpfast.PrefixConn{Conn: conn, Prefix: append([]byte(nil), b...)} // read directly, never parked
	}
	done := make(chan struct{})
	newTunnel(s, g, idle, func(ab, ba int64) { in, out = ab, ba; close(done) }).run()
	<-done
	return http.StatusOK, in, out
}

// streamConn is an h2 stream as a connection: reads are the request body,
// writes the response, flushed at once.
type streamConn struct {
	body          io.ReadCloser
	w             http.ResponseWriter
	rc            *http.ResponseController
	mu            sync.Mutex
	closed        bool
	local, remote net.Addr
}

var errStreamClosed = errors.New("stream closed")

func (s *streamConn) Read(p []byte) (int, error) { return s.body.Read(p) }

func (s *streamConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errStreamClosed
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

func (s *streamConn) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.body.Close()
}

func (s *streamConn) LocalAddr() net.Addr                { return s.local }
func (s *streamConn) RemoteAddr() net.Addr               { return s.remote }
func (s *streamConn) SetDeadline(t time.Time) error      { return s.rc.SetReadDeadline(t) }
func (s *streamConn) SetReadDeadline(t time.Time) error  { return s.rc.SetReadDeadline(t) }
func (s *streamConn) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

// platformConn serves the platform's handler on one end of a pipe, as if
// the request had come over HTTP/1.1 on the connection req came on, and
// returns the other end.
func (r *Router) platformConn(req *http.Request) net.Conn {
	ours, theirs := net.Pipe()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, in *http.Request) {
			in.TLS, in.RemoteAddr = req.TLS, req.RemoteAddr
			r.o.Platform.ServeHTTP(w, in)
		}),
		ReadHeaderTimeout: r.o.HeaderTimeout,
	}
	go srv.Serve(&oneConn{c: theirs})
	return ours
}

// oneConn is a listener of one connection.
type oneConn struct {
	mu sync.Mutex
	c  net.Conn
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return nil, net.ErrClosed
	}
	c := l.c
	l.c = nil
	return c, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
