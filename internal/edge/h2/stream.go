package h2

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response. Its fields are under c.mu.
type stream struct {
	c          *conn
	id         uint32
	cond       sync.Cond // L: &c.mu
	waiting    bool      // in cond.Wait to send
	sendWin    int64
	recvWin    int64 // what the client may still send
	consumed   int64 // body bytes read, not yet given back
	remoteDone bool  // the client's END_STREAM (or a reset)
	localDone  bool  // the server's END_STREAM (or a reset)
	closed     bool
	err        error              // why writes fail (the stream reset, the connection gone)
	cancel     context.CancelFunc // the request's context's (nil: none made)

	// The request body: what came and was not read yet.
	body         []byte
	off          int
	bodyErr      error // io.EOF once the client ended the stream
	bodyGone     bool  // the handler closed it: what comes is dropped
	declLen      int64 // Content-Length (-1: none)
	got          int64
	trailer      http.Header // the request's Trailer (the handler's: filled on its read of EOF)
	trailerIn    http.Header // the trailers as they came (the reader's)
	needContinue bool        // Expect: 100-continue, not answered yet

	req Request // its head, as parsed
	pub Stream  // what Server.Direct answers it with

	readDeadline  time.Time
	rdTimer       *time.Timer
	writeDeadline time.Time
	wdTimer       *time.Timer
}

func (st *stream) stopTimers() {
	if st.rdTimer != nil {
		st.rdTimer.Stop()
	}
	if st.wdTimer != nil {
		st.wdTimer.Stop()
	}
}

// giveBack returns n bytes of the stream's window once enough have
// gathered (c.mu held).
func (st *stream) giveBack(n int64) {
	st.consumed += n
	if st.consumed >= streamWindow/2 && !st.remoteDone && st.c.werr == nil {
		st.c.writeWindowUpdate(st.id, uint32(st.consumed))
		st.recvWin += st.consumed
		st.consumed = 0
		st.c.kick()
	}
}

// processHeaders opens a stream, or takes a request's trailers.
func (c *conn) processHeaders(f *headerBlock) error {
	id := f.id
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		if st.remoteDone {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
		}
		return c.processTrailers(st, f)
	}
	if id <= c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // closed, or lower than one opened
	}
	if c.goAway {
		return nil // after the GOAWAY's last stream: ignored
	}
	c.maxID = id
	if f.prio && f.dep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if len(c.streams) >= int(c.s.maxStreams()) {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	if c.running > 4*int(c.s.maxStreams()) {
		// Streams reset while their handlers still run: the client
		// opens them faster than they end.
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	st := &stream{c: c, id: id, sendWin: c.initWin, recvWin: streamWindow, declLen: -1}
	st.cond.L = &c.mu
	rq, err := c.parseRequest(st, f)
	if err != nil {
		return err
	}
	if f.end {
		st.remoteDone = true
		st.bodyErr = io.EOF
	}
	c.streams[id] = st
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.s.Direct != nil && !rq.Body && !f.truncated {
		c.mu.Unlock()
		st.pub = Stream{st: st, isHead: rq.Method == http.MethodHead}
		taken := c.s.Direct(&st.pub, rq)
		c.mu.Lock()
		if taken {
			return nil
		}
	}
	c.running++
	c.handlers.Add(1)
	go c.runStream(st, rq, f.truncated)
	return nil
}

func headerTooLong(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "431 Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
}

func (c *conn) processTrailers(st *stream, f *headerBlock) error {
	if !f.end || len(f.fields) > 0 && f.fields[0].IsPseudo() {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	for _, hf := range f.fields {
		k := canonicalKey(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
		}
		if _, ok := st.trailer[k]; ok { // (declared: the map's keys are not written)
			if st.trailerIn == nil {
				st.trailerIn = make(http.Header)
			}
			st.trailerIn[k] = append(st.trailerIn[k], hf.Value)
		}
	}
	return c.endRemote(st)
}

// Request is a request's head as it came; Server.Direct sees it before
// any http.Request is made of it.
type Request struct {
	Method, Scheme, Authority, Path, Protocol string
	// Fields are the regular header fields as sent (names lower case,
	// cookies as separate fields).
	Fields     []hpack.HeaderField
	RemoteAddr string
	TLS        *tls.ConnectionState // https only
	// ContentLength is the body's declared length (-1: not declared; 0
	// and Body false: the request has none).
	ContentLength int64
	Body          bool
}

// parseRequest checks a request's header fields (RFC 9113 §8.3, RFC
// 8441); a malformed request is a stream error.
func (c *conn) parseRequest(st *stream, f *headerBlock) (*Request, error) {
	malformed := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	rq := &st.req
	*rq = Request{RemoteAddr: c.remote, Body: !f.end}
	pseudo := len(f.fields) // (they come first: checked in decoding)
	for i, hf := range f.fields {
		if !hf.IsPseudo() {
			pseudo = i
			break
		}
	}
	rq.Fields = f.fields[pseudo:]
	for _, hf := range f.fields[:pseudo] {
		switch hf.Name {
		case ":method":
			rq.Method = hf.Value
		case ":scheme":
			rq.Scheme = hf.Value
		case ":authority":
			rq.Authority = hf.Value
		case ":path":
			rq.Path = hf.Value
		case ":protocol":
			rq.Protocol = hf.Value
		default: // :status
			return nil, malformed
		}
	}
	connect := rq.Method == http.MethodConnect
	switch {
	case rq.Protocol != "":
		if !connect || rq.Path == "" || rq.Scheme == "" || rq.Authority == "" {
			return nil, malformed
		}
	case connect:
		if rq.Path != "" || rq.Scheme != "" || rq.Authority == "" {
			return nil, malformed
		}
	default:
		if rq.Method == "" || rq.Path == "" || rq.Scheme != "http" && rq.Scheme != "https" {
			return nil, malformed
		}
	}
	if !validMethod(rq.Method) {
		return nil, malformed
	}
	if rq.Scheme == "https" {
		rq.TLS = c.tls
	}
	rq.ContentLength = -1
	if !rq.Body {
		rq.ContentLength = 0
	}
	for _, hf := range rq.Fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, malformed // connection-specific (§8.2.2)
		case "te":
			if hf.Value != "trailers" {
				return nil, malformed
			}
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || st.declLen >= 0 || !rq.Body && n > 0 {
				return nil, malformed // (a length, and no body)
			}
			if rq.Body {
				rq.ContentLength, st.declLen = int64(n), int64(n)
			}
		case "expect":
			st.needContinue = rq.Body && strings.EqualFold(hf.Value, "100-continue")
		case "trailer":
			if rq.Body {
				for _, k := range strings.Split(hf.Value, ",") {
					if k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k)); k != "" && httpguts.ValidTrailerHeader(k) {
						if st.trailer == nil {
							st.trailer = make(http.Header)
						}
						st.trailer[k] = nil
					}
				}
			}
		}
	}
	if rq.Authority == "" {
		for _, hf := range rq.Fields {
			if hf.Name == "host" {
				rq.Authority = hf.Value
				break
			}
		}
	}
	return rq, nil
}

// httpRequest makes the http.Request of rq (nil if its path is not a
// request target).
func (st *stream) httpRequest(rq *Request) *http.Request {
	h := make(http.Header, len(rq.Fields)+1)
	vals := make([]string, len(rq.Fields))
	var cookies []string
	for i, hf := range rq.Fields {
		if hf.Name == "cookie" { // split to compress better; one line again (§8.2.3)
			cookies = append(cookies, hf.Value)
			continue
		}
		k := canonicalKey(hf.Name)
		vals[i] = hf.Value
		if vv, ok := h[k]; ok {
			h[k] = append(vv, hf.Value)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if rq.Protocol != "" {
		h[":protocol"] = []string{rq.Protocol}
	}
	var u *url.URL
	uri := rq.Path
	switch {
	case rq.Method == http.MethodConnect && rq.Protocol == "":
		u, uri = &url.URL{Host: rq.Authority}, rq.Authority
	case rq.Method == http.MethodOptions && rq.Path == "*":
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(rq.Path); err != nil {
			return nil
		}
	}
	req := &http.Request{
		Method:        rq.Method,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Body:          http.NoBody,
		ContentLength: rq.ContentLength,
		Host:          rq.Authority,
		RemoteAddr:    rq.RemoteAddr,
		RequestURI:    uri,
		TLS:           rq.TLS,
	}
	if rq.Body {
		req.Trailer = st.trailer
		req.Body = &body{st: st}
	}
	ctx, cancel := context.WithCancel(st.c.ctx)
	st.c.mu.Lock()
	st.cancel = cancel
	if st.closed { // reset meanwhile
		cancel()
	}
	st.c.mu.Unlock()
	return req.WithContext(ctx)
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}

// runStream serves a stream's request with the handler.
func (c *conn) runStream(st *stream, rq *Request, truncated bool) {
	var w *responseWriter
	defer func() {
		if e := recover(); e != nil {
			if e != http.ErrAbortHandler {
				c.s.logf("HTTP/2 handler panicked", "client", c.remote, "panic", e, "stack", string(debug.Stack()))
			}
			c.mu.Lock()
			c.resetStream(st.id, http2.ErrCodeInternal)
			c.mu.Unlock()
		} else if w != nil {
			w.finish()
		}
		if w != nil {
			w.release()
		}
		c.mu.Lock()
		c.running--
		cancel := st.cancel
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		c.handlers.Done()
	}()
	var h http.Handler = c.s.Handler
	req := st.httpRequest(rq)
	switch {
	case truncated:
		h = http.HandlerFunc(headerTooLong)
	case req == nil:
		h = http.HandlerFunc(badTarget)
	}
	if req == nil {
		req = &http.Request{Method: rq.Method, URL: &url.URL{}, Header: http.Header{}, Proto: "HTTP/2.0", ProtoMajor: 2, Body: http.NoBody, RemoteAddr: rq.RemoteAddr}
	}
	w = newResponseWriter(st, req.Method == http.MethodHead)
	h.ServeHTTP(w, req)
}

func badTarget(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "400 Bad Request: malformed :path", http.StatusBadRequest)
}

// body is a request's body: the DATA frames as they come.
type body struct{ st *stream }

func (b *body) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.needContinue {
		st.needContinue = false
		if !st.remoteDone && !st.closed && c.werr == nil {
			c.enc.WriteField(hpackField(":status", "100"))
			c.writeHeaderBlock(st.id, false)
			c.kick()
		}
	}
	for {
		if st.off < len(st.body) {
			n := copy(p, st.body[st.off:])
			st.off += n
			if st.off == len(st.body) {
				st.body, st.off = st.body[:0], 0
			}
			c.giveBack(int64(n))
			st.giveBack(int64(n))
			return n, nil
		}
		if st.bodyErr != nil {
			if st.trailerIn != nil && st.bodyErr == io.EOF {
				for k, vv := range st.trailerIn {
					st.trailer[k] = vv
				}
				st.trailerIn = nil
			}
			return 0, st.bodyErr
		}
		if st.bodyGone {
			return 0, http.ErrBodyReadAfterClose
		}
		if !st.readDeadline.IsZero() && !time.Now().Before(st.readDeadline) {
			return 0, os.ErrDeadlineExceeded
		}
		st.cond.Wait()
	}
}

func (b *body) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if unread := int64(len(st.body) - st.off); unread > 0 {
		c.giveBack(unread)
		st.giveBack(unread)
	}
	st.body, st.off, st.bodyGone = nil, 0, true
	st.needContinue = false
	return nil
}

// commonHeaders are the header names looked up both ways without
// allocating: canonical → lower case (responses), and back (requests).
var commonHeaders = []string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
	"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
	"Access-Control-Request-Headers", "Access-Control-Request-Method", "Age", "Allow", "Alt-Svc",
	"Authorization", "Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy", "Content-Type",
	"Cookie", "Date", "Etag", "Expect", "Expires", "Forwarded", "From", "Host", "If-Match",
	"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Last-Modified", "Link",
	"Location", "Max-Forwards", "Origin", "Pragma", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
	"Range", "Referer", "Refresh", "Retry-After", "Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site",
	"Sec-Fetch-User", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol", "Sec-Websocket-Version",
	"Server", "Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "Upgrade-Insecure-Requests",
	"User-Agent", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options", "X-Forwarded-For",
	"X-Forwarded-Host", "X-Forwarded-Proto", "X-Frame-Options", "X-Real-Ip", "X-Request-Id", "X-Xss-Protection",
}

var lowerOf, canonicalOf = func() (map[string]string, map[string]string) {
	lo, ca := make(map[string]string), make(map[string]string)
	for _, k := range commonHeaders {
		l := strings.ToLower(k)
		lo[k], ca[l] = l, k
	}
	return lo, ca
}()

func canonicalKey(lower string) string {
	if k, ok := canonicalOf[lower]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(lower)
}

func lowerKey(k string) string {
	if l, ok := lowerOf[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// CanonicalName is the canonical form of a lower-case header name.
func CanonicalName(lower string) string { return canonicalKey(lower) }

// LowerName is a header name in lower case, as HTTP/2 sends it; common
// names without allocating.
func LowerName(name []byte) string {
	if l, ok := lowerOf[string(name)]; ok {
		return l
	}
	if k, ok := canonicalOf[string(name)]; ok { // already lower case
		return lowerOf[k]
	}
	return strings.ToLower(string(name))
}
