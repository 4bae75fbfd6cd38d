package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-paas/gantry/internal/store"
)

// The fast path proxies plain HTTP/1.1 requests to running apps without
// net/http: it parses the request head in place, writes it to a pooled
// connection to the gear with the X-Forwarded-* headers set, and copies the
// response back, framing by Content-Length or chunks. Everything else (the
// platform host, redirects, pages, idle apps, upgrades, Expect, chunked
// request bodies, HTTP/1.0, anything unusual) is handed, with the bytes
// already read, to the net/http server, at a request boundary. The two
// paths count, log and measure requests the same way.

const fastBufSize = 4 << 10

var (
	readers    = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastBufSize) }}
	headBufs   = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
	errHandOff = errors.New("hand off to net/http")
)

// acceptHTTP serves the HTTP port: each connection starts on the fast path.
func (r *Router) acceptHTTP(ln net.Listener, q *connQueue) {
	defer q.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		go r.serveFast(c, q)
	}
}

// serveFast serves requests on c until one needs net/http, which then
// gets the connection with the unread bytes.
func (r *Router) serveFast(c net.Conn, q *connQueue) {
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	handOff, owned := false, false
	defer func() {
		switch {
		case handOff:
			pending, _ := br.Peek(br.Buffered())
			q.push(&prefixConn{Conn: c, prefix: append([]byte(nil), pending...)})
		case !owned:
			c.Close()
		}
		br.Reset(nil)
		readers.Put(br)
	}()
	if !r.fastConns.add(c) {
		return // shutting down
	}
	defer r.fastConns.remove(c)
	remote := c.RemoteAddr().String()
	clientIP, _, _ := net.SplitHostPort(remote)
	trusted := r.trusted(clientIP)
	for {
		c.SetReadDeadline(time.Now().Add(r.o.IdleTimeout))
		if r.fastConns.closing.Load() {
			return
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(r.o.HeaderTimeout))
		var req fastRequest
		err := req.parse(br)
		if err == errHandOff {
			handOff = true
			return
		}
		if err != nil {
			return
		}
		host := hostOnly(string(req.host))
		if r.platform[host] {
			handOff = true
			return
		}
		rt := r.table.Load().Lookup(host)
		if rt == nil || rt.RedirectTo != "" || rt.HTTPS == store.HTTPSRedirect && r.tlsLn != nil || len(rt.Endpoints) == 0 ||
			r.o.ACME != nil && bytes.HasPrefix(req.target, []byte("/.well-known/acme-challenge/")) {
			handOff = true
			return
		}
		br.Discard(len(req.head)) // the fast path takes this request
		if req.contentLength > 0 {
			c.SetReadDeadline(time.Time{}) // the body may take its time
		}
		keep, err := r.proxyFast(c, br, &req, rt, host, clientIP, remote, trusted)
		if err == errTunnelOwned {
			owned = true
			return
		}
		if err != nil || !keep {
			return
		}
	}
}

// fastRequest is a parsed request head; the byte slices point into the
// reader's buffer and are valid until the head is consumed.
type fastRequest struct {
	head          []byte // the whole head, CRLFCRLF included
	isHead        bool   // a HEAD request (kept: the head's bytes do not outlive the body)
	method        []byte
	target        []byte
	host          []byte
	xff, xfp, xfh []byte
	contentLength int64
	close         bool
	wantsUpgrade  bool     // Connection: upgrade
	upgrade       []byte   // the Upgrade header (websocket)
	headers       [][2]int // start, end of each header line to forward, in head
}

// parse reads a request head without consuming it: the caller discards
// it when the fast path takes the request, or hands it off.
func (q *fastRequest) parse(br *bufio.Reader) error {
	var head []byte
	for {
		buf, err := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head = buf[:i+4]
			break
		}
		if err != nil {
			return err
		}
		if br.Buffered() >= fastBufSize {
			return errHandOff // a large head: net/http has the limits for it
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if br.Buffered() > 0 && err != io.EOF {
				return errHandOff
			}
			return err
		}
	}
	q.head = head
	lineEnd := bytes.IndexByte(head, '\n')
	line := head[:lineEnd]
	if len(line) < 2 || line[len(line)-1] != '\r' {
		return errHandOff
	}
	line = line[:len(line)-1]
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 || string(line[sp2+1:]) != "HTTP/1.1" {
		return errHandOff
	}
	q.method, q.target = line[:sp1], line[sp1+1:sp2]
	q.isHead = string(q.method) == "HEAD"
	if len(q.target) == 0 || q.target[0] != '/' || !token(q.method) {
		return errHandOff
	}
	q.contentLength = 0
	seenCL := false
	pos := lineEnd + 1
	for pos < len(head)-2 {
		end := pos + bytes.IndexByte(head[pos:], '\n')
		if end < pos+1 || head[end-1] != '\r' {
			return errHandOff // bare LF
		}
		l := head[pos : end-1]
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !token(l[:colon]) {
			return errHandOff // obs-fold, spaces before the colon, bad names
		}
		name, value := l[:colon], bytes.Trim(l[colon+1:], " \t")
		if bytes.IndexByte(value, 0) >= 0 || bytes.IndexByte(value, '\r') >= 0 {
			return errHandOff
		}
		forward := true
		switch {
		case equalFold(name, "host"):
			if q.host != nil {
				return errHandOff
			}
			q.host = value
		case equalFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || seenCL {
				return errHandOff
			}
			q.contentLength, seenCL = n, true
		case equalFold(name, "connection"):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case equalFold(tok, "close"):
					q.close = true
				case equalFold(tok, "keep-alive"):
				case equalFold(tok, "upgrade"):
					q.wantsUpgrade = true
				default:
					return errHandOff // headers declared hop-by-hop
				}
			}
			forward = false
		case equalFold(name, "upgrade"):
			if !equalFold(value, "websocket") || q.upgrade != nil {
				return errHandOff // h2c and other protocols: net/http's business
			}
			q.upgrade, forward = value, false
		case equalFold(name, "transfer-encoding"), equalFold(name, "expect"), equalFold(name, "te"), equalFold(name, "trailer"):
			return errHandOff
		case equalFold(name, "keep-alive"), equalFold(name, "proxy-connection"):
			forward = false
		case equalFold(name, "x-forwarded-for"):
			if q.xff != nil {
				return errHandOff
			}
			q.xff, forward = value, false
		case equalFold(name, "x-forwarded-proto"):
			q.xfp, forward = value, false
		case equalFold(name, "x-forwarded-host"):
			q.xfh, forward = value, false
		}
		if forward {
			q.headers = append(q.headers, [2]int{pos, end + 1})
		}
		pos = end + 1
	}
	if q.host == nil || q.wantsUpgrade != (q.upgrade != nil) || q.upgrade != nil && (string(q.method) != "GET" || q.contentLength > 0) {
		return errHandOff
	}
	return nil
}

// backendConn is a pooled connection to a gear.
type backendConn struct {
	net.Conn
	br   *bufio.Reader
	used time.Time
}

// backendPool keeps idle connections per gear endpoint.
type backendPool struct {
	mu   sync.Mutex
	idle map[string][]*backendConn
	n    atomic.Int64
}

const (
	poolIdleTimeout = 4 * time.Second // below Node.js's 5 s keep-alive
	poolMaxPerHost  = 1024
)

func (p *backendPool) get(ep string) *backendConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[ep]
	if len(list) == 0 {
		return nil
	}
	for len(list) > 0 {
		bc := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(bc.used) < poolIdleTimeout {
			p.idle[ep] = list
			return bc
		}
		bc.close()
	}
	p.idle[ep] = list
	return nil
}

func (p *backendPool) put(ep string, bc *backendConn) {
	bc.used = time.Now()
	p.mu.Lock()
	if p.idle == nil {
		p.idle = map[string][]*backendConn{}
	}
	if len(p.idle[ep]) < poolMaxPerHost {
		p.idle[ep] = append(p.idle[ep], bc)
		bc = nil
	}
	p.mu.Unlock()
	if bc != nil {
		bc.close()
	}
}

// prune closes connections idle too long (called every second).
func (p *backendPool) prune() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ep, list := range p.idle {
		keep := list[:0]
		for _, bc := range list {
			if time.Since(bc.used) < poolIdleTimeout {
				keep = append(keep, bc)
			} else {
				bc.close()
			}
		}
		if len(keep) == 0 {
			delete(p.idle, ep)
		} else {
			p.idle[ep] = keep
		}
	}
}

func (bc *backendConn) close() {
	bc.Conn.Close()
	bc.br.Reset(nil)
	readers.Put(bc.br)
}

func (r *Router) dialBackend(ep string, rt *Route) (*backendConn, error) {
	d := r.o.DialTimeout
	if rt.ConnectTimeout > 0 {
		d = rt.ConnectTimeout
	}
	c, err := net.DialTimeout("tcp", ep, d)
	if err != nil {
		return nil, err
	}
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	return &backendConn{Conn: c, br: br}, nil
}

// proxyFast sends one parsed request to a gear and its response back. It
// reports whether the client connection may serve another request.
func (r *Router) proxyFast(c net.Conn, cbr *bufio.Reader, req *fastRequest, rt *Route, host, clientIP, remote string, trusted bool) (bool, error) {
	start := time.Now()
	rt2, ep, cnt := r.pick(host)
	if ep == "" {
		// The route lost its gears meanwhile: answer as net/http would.
		r.obs.rawPage(c, rt.stats, start, nil, 503, "App not running", "The app at "+host+" has no running gears right now.")
		return false, nil
	}
	defer cnt.Add(-1)
	st := rt2.stats
	st.begin()
	defer st.end()

	hb := headBufs.Get().(*[]byte)
	defer headBufs.Put(hb)
	out := r.requestHead((*hb)[:0], req, clientIP, "http", trusted)
	*hb = out
	var entry *accessEntry
	if r.obs.w != nil { // the head's bytes are not kept past the body
		entry = &accessEntry{host: string(req.host), method: string(req.method), path: pathOf(req.target), proto: "HTTP/1.1", remote: remote}
	}

	var bc *backendConn
	var resp fastResponse
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		reused := false
		if req.upgrade == nil {
			bc = r.pool.get(ep)
		}
		if bc != nil {
			reused = true
		} else if bc, err = r.dialBackend(ep, rt2); err != nil {
			break
		}
		err = r.sendRequest(bc, out, cbr, req)
		if err == nil {
			err = resp.readHead(bc.br, req, rt2.ReadTimeout, bc)
		}
		if err == nil {
			break
		}
		bc.close()
		bc = nil
		// A pooled connection the gear closed meanwhile: once more on a
		// fresh one, if nothing of a body was sent.
		if !reused || req.contentLength > 0 || resp.started {
			break
		}
	}
	if err != nil {
		status := 502
		if errors.Is(err, errReadTimeout) {
			status = 504
		}
		if r.logLimit.allow() {
			r.log.Warn("proxy error", "host", host, "gear", ep, "err", err)
		}
		title, msg := "App not responding", "The app at "+host+" did not answer. Its owner can look at `gantry logs`."
		if status == 504 {
			title, msg = "App too slow", "The app at "+host+" did not start its answer within "+rt2.ReadTimeout.String()+"."
		}
		r.obs.rawPage(c, st, start, entry, status, title, msg)
		return false, nil
	}
	if resp.status == http.StatusSwitchingProtocols {
		return false, r.tunnelFast(c, cbr, bc, &resp, rt2, st, entry, start, ep)
	}
	keep, n, err := r.sendResponse(c, bc, &resp, req)
	if req.upgrade != nil {
		resp.reusable = false
	}
	if err != nil || !resp.reusable {
		bc.close()
	} else {
		r.pool.put(ep, bc)
	}
	r.obs.recordEntry(st, entry, start, resp.status, req.contentLength, n, ep)
	return keep && err == nil, err
}

// requestHead renders the head sent to the gear.
func (r *Router) requestHead(out []byte, req *fastRequest, clientIP, proto string, trusted bool) []byte {
	out = append(out, req.method...)
	out = append(out, ' ')
	out = append(out, req.target...)
	out = append(out, " HTTP/1.1\r\n"...)
	for _, h := range req.headers {
		out = append(out, req.head[h[0]:h[1]]...)
	}
	out = append(out, "X-Forwarded-For: "...)
	if trusted && req.xff != nil {
		out = append(out, req.xff...)
		out = append(out, ", "...)
	}
	out = append(out, clientIP...)
	out = append(out, "\r\nX-Forwarded-Host: "...)
	if trusted && req.xfh != nil {
		out = append(out, req.xfh...)
	} else {
		out = append(out, req.host...)
	}
	out = append(out, "\r\nX-Forwarded-Proto: "...)
	if trusted && req.xfp != nil {
		out = append(out, req.xfp...)
	} else {
		out = append(out, proto...)
	}
	if req.upgrade != nil {
		out = append(out, "\r\nConnection: Upgrade\r\nUpgrade: "...)
		out = append(out, req.upgrade...)
	}
	out = append(out, "\r\n\r\n"...)
	return out
}

// sendRequest writes the head and the body (Content-Length bytes) to the
// gear: a body already buffered goes in the same write.
func (r *Router) sendRequest(bc *backendConn, head []byte, cbr *bufio.Reader, req *fastRequest) error {
	if req.contentLength == 0 {
		_, err := bc.Write(head)
		return err
	}
	if int64(cbr.Buffered()) >= req.contentLength && len(head)+int(req.contentLength) <= 16<<10 {
		body, _ := cbr.Peek(int(req.contentLength))
		buf := append(head, body...)
		cbr.Discard(int(req.contentLength))
		_, err := bc.Write(buf)
		return err
	}
	if _, err := bc.Write(head); err != nil {
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	_, err := io.CopyBuffer(bc.Conn, io.LimitReader(cbr, req.contentLength), *bp)
	return err
}

// fastResponse is a parsed response head.
type fastResponse struct {
	status        int
	head          []byte
	contentLength int64 // -1: none given
	chunked       bool
	untilClose    bool
	reusable      bool
	started       bool // a byte of the response arrived
	headers       [][2]int
}

func (p *fastResponse) readHead(br *bufio.Reader, req *fastRequest, readTimeout time.Duration, c net.Conn) error {
	if readTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(readTimeout))
		defer c.SetReadDeadline(time.Time{})
	}
	for {
		if _, err := br.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.started = true // not worth retrying: the app is slow
				return errReadTimeout
			}
			return err
		}
		p.started = true
		var head []byte
		for {
			buf, _ := br.Peek(br.Buffered())
			if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
				head = buf[:i+4]
				break
			}
			if br.Buffered() >= fastBufSize {
				return errors.New("response headers larger than 4 KiB")
			}
			if _, err := br.Peek(br.Buffered() + 1); err != nil {
				return err
			}
		}
		if err := p.parse(head, req); err != nil {
			return err
		}
		if p.status == http.StatusSwitchingProtocols && req.upgrade != nil {
			return nil
		}
		if p.status >= 100 && p.status < 200 {
			return errors.New("informational responses are not expected here") // Expect: 100-continue goes to net/http
		}
		return nil
	}
}

func (p *fastResponse) parse(head []byte, req *fastRequest) error {
	p.head, p.headers, p.contentLength, p.chunked, p.untilClose, p.reusable = head, p.headers[:0], -1, false, false, true
	lineEnd := bytes.IndexByte(head, '\n')
	line := head[:lineEnd]
	if len(line) < 13 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errors.New("malformed status line from the app")
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil || status < 100 || status > 999 {
		return errors.New("malformed status from the app")
	}
	p.status = status
	if line[7] == '0' {
		p.reusable = false // HTTP/1.0 gear
	}
	pos := lineEnd + 1
	for pos < len(head)-2 {
		end := pos + bytes.IndexByte(head[pos:], '\n')
		if end < pos {
			return errors.New("malformed header from the app")
		}
		l := bytes.TrimRight(head[pos:end], "\r")
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return errors.New("malformed header from the app")
		}
		name, value := l[:colon], bytes.Trim(l[colon+1:], " \t")
		forward := true
		switch {
		case equalFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || p.contentLength >= 0 && n != p.contentLength {
				return errors.New("bad Content-Length from the app")
			}
			p.contentLength = n
		case equalFold(name, "transfer-encoding"):
			if equalFold(value, "chunked") {
				p.chunked = true
			} else {
				p.untilClose = true
			}
		case equalFold(name, "connection"):
			if bytes.Contains(bytes.ToLower(value), []byte("close")) {
				p.reusable = false
			}
			forward = false
		case equalFold(name, "keep-alive"), equalFold(name, "proxy-connection"), equalFold(name, "upgrade"):
			forward = false
		}
		if forward {
			p.headers = append(p.headers, [2]int{pos, end + 1})
		}
		pos = end + 1
	}
	noBody := req.isHead || status == 204 || status == 304 || status < 200
	switch {
	case noBody:
		p.contentLength, p.chunked, p.untilClose = 0, false, false
	case p.chunked:
		p.contentLength = -1
	case p.contentLength < 0:
		p.untilClose = true
	}
	if p.untilClose {
		p.reusable = false
	}
	return nil
}

// sendResponse writes the response head and body to the client. It
// reports whether the client connection stays open, and the body bytes.
func (r *Router) sendResponse(c net.Conn, bc *backendConn, p *fastResponse, req *fastRequest) (bool, int64, error) {
	keep := !req.close && !p.untilClose
	hb := headBufs.Get().(*[]byte)
	defer headBufs.Put(hb)
	out := append((*hb)[:0], p.head[:bytes.IndexByte(p.head, '\n')+1]...)
	for _, h := range p.headers {
		out = append(out, p.head[h[0]:h[1]]...)
	}
	if !keep {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	headLen := len(p.head)
	// The body bytes already read go out with the head, in one write.
	var body int64
	if p.contentLength >= 0 && int64(bc.br.Buffered()-headLen) >= p.contentLength && p.contentLength <= 16<<10 {
		b, _ := bc.br.Peek(headLen + int(p.contentLength))
		out = append(out, b[headLen:]...)
		body = p.contentLength
		bc.br.Discard(headLen + int(p.contentLength))
		*hb = out
		_, err := c.Write(out)
		return keep, body, err
	}
	bc.br.Discard(headLen)
	*hb = out
	if _, err := c.Write(out); err != nil {
		return false, 0, err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var err error
	switch {
	case p.chunked:
		body, err = copyChunked(c, bc.br, *bp)
	case p.untilClose:
		body, err = io.CopyBuffer(c, bc.br, *bp)
		keep = false
	default:
		body, err = io.CopyBuffer(c, io.LimitReader(bc.br, p.contentLength), *bp)
		if err == nil && body < p.contentLength {
			err = io.ErrUnexpectedEOF
		}
	}
	return keep, body, err
}

// copyChunked copies a chunked body as is, up to and including its last
// chunk and trailers, and returns the data bytes.
func copyChunked(w io.Writer, br *bufio.Reader, buf []byte) (int64, error) {
	var data int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return data, err
		}
		if _, err := w.Write(line); err != nil {
			return data, err
		}
		sizeField := bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(sizeField, ';'); i >= 0 {
			sizeField = sizeField[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeField)), 16, 64)
		if err != nil || size < 0 {
			return data, errors.New("bad chunk size from the app")
		}
		if size == 0 {
			// Trailers, then the empty line.
			for {
				t, err := br.ReadSlice('\n')
				if err != nil {
					return data, err
				}
				if _, err := w.Write(t); err != nil {
					return data, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return data, nil
				}
			}
		}
		n, err := io.CopyBuffer(w, io.LimitReader(br, size+2), buf) // data and its CRLF
		data += max(n-2, 0)
		if err != nil {
			return data, err
		}
		if n < size+2 {
			return data, io.ErrUnexpectedEOF
		}
	}
}

func token(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`()<>@,;:\"/[]?={}`), c) >= 0 {
			return false
		}
	}
	return true
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// pathOf is the request target without its query (which may hold secrets).
func pathOf(target []byte) string {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	return string(target)
}

// connSet tracks the fast path's client connections so that a shutdown
// can end the idle ones (a request in flight finishes first).
type connSet struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing atomic.Bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeIdle wakes every connection waiting for a request; they see the
// flag and close.
func (s *connSet) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
}
