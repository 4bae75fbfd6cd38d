package h2

import (
	"context"
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
	err        error // why writes fail (the stream reset, the connection gone)
	ctx        context.Context
	cancel     context.CancelFunc

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
func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
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
	if f.HasPriority() && f.Priority.StreamDep == id {
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
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	req, err := c.newRequest(st, f)
	if err != nil {
		st.cancel()
		return err
	}
	var h http.Handler = c.s.Handler
	if f.Truncated {
		h = http.HandlerFunc(headerTooLong)
	}
	if f.StreamEnded() {
		st.remoteDone = true
		st.bodyErr = io.EOF
	}
	c.streams[id] = st
	if c.idle != nil {
		c.idle.Stop()
	}
	c.running++
	c.handlers.Add(1)
	go c.runHandler(st, req, h)
	return nil
}

func headerTooLong(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "431 Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
}

func (c *conn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	for _, hf := range f.RegularFields() {
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

// newRequest checks a request's header fields (RFC 9113 §8.3, RFC 8441)
// and makes the http.Request of them; a malformed request is a stream
// error.
func (c *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	malformed := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	var method, scheme, authority, path, protocol string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		case ":protocol":
			protocol = hf.Value
		default: // :status
			return nil, malformed
		}
	}
	connect := method == http.MethodConnect
	switch {
	case protocol != "":
		if !connect || path == "" || scheme == "" || authority == "" {
			return nil, malformed
		}
	case connect:
		if path != "" || scheme != "" || authority == "" {
			return nil, malformed
		}
	default:
		if method == "" || path == "" || scheme != "http" && scheme != "https" {
			return nil, malformed
		}
	}
	if !validMethod(method) {
		return nil, malformed
	}
	fields := f.RegularFields()
	h := make(http.Header, len(fields)+1)
	vals := make([]string, len(fields))
	var cookies []string
	for i, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, malformed // connection-specific (§8.2.2)
		case "te":
			if hf.Value != "trailers" {
				return nil, malformed
			}
		case "cookie": // split to compress better; one line again (§8.2.3)
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
	if authority == "" {
		authority = h.Get("Host")
	}
	if protocol != "" {
		h[":protocol"] = []string{protocol}
	}
	var u *url.URL
	uri := path
	switch {
	case connect && protocol == "":
		u, uri = &url.URL{Host: authority}, authority
	case method == http.MethodOptions && path == "*":
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, malformed
		}
	}
	req := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Body:       http.NoBody,
		Host:       authority,
		RemoteAddr: c.remote,
		RequestURI: uri,
	}
	if scheme == "https" {
		req.TLS = c.tls
	}
	if !f.StreamEnded() {
		req.ContentLength = -1
		if cl, ok := h["Content-Length"]; ok {
			n, err := strconv.ParseUint(cl[0], 10, 63)
			if err != nil || len(cl) > 1 {
				return nil, malformed
			}
			req.ContentLength, st.declLen = int64(n), int64(n)
		}
		for _, v := range h["Trailer"] {
			for _, k := range strings.Split(v, ",") {
				if k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k)); k != "" && httpguts.ValidTrailerHeader(k) {
					if req.Trailer == nil {
						req.Trailer = make(http.Header)
					}
					req.Trailer[k] = nil
				}
			}
		}
		st.trailer = req.Trailer
		st.needContinue = strings.EqualFold(h.Get("Expect"), "100-continue")
		req.Body = &body{st: st}
	} else if cl := h.Get("Content-Length"); cl != "" && cl != "0" {
		return nil, malformed // a length, and no body
	}
	return req.WithContext(st.ctx), nil
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}

// runHandler serves a stream's request.
func (c *conn) runHandler(st *stream, req *http.Request, h http.Handler) {
	w := &responseWriter{st: st, hdr: make(http.Header), declLen: -1, isHead: req.Method == http.MethodHead}
	defer func() {
		if e := recover(); e != nil {
			if e != http.ErrAbortHandler {
				c.s.logf("HTTP/2 handler panicked", "client", c.remote, "panic", e, "stack", string(debug.Stack()))
			}
			c.mu.Lock()
			c.resetStream(st.id, http2.ErrCodeInternal)
			c.mu.Unlock()
		} else {
			w.finish()
		}
		w.release()
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
		st.cancel()
		c.handlers.Done()
	}()
	h.ServeHTTP(w, req)
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
