package h2

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bodyBufSize is what a response buffers before it sends DATA: a
// response that fits leaves, headers and body, together when the
// handler returns, with its Content-Length.
const bodyBufSize = 16 << 10

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, bodyBufSize); return &b }}

// responseWriter is a stream's http.ResponseWriter; only the handler's
// goroutine uses it.
type responseWriter struct {
	st          *stream
	hdr         http.Header
	status      int
	wroteHeader bool // the final status is set
	sentHeader  bool // and its HEADERS frame queued
	done        bool
	isHead      bool
	buf         *[]byte // body not yet sent
	written     int64
	declLen     int64    // the handler's Content-Length (-1: none)
	trailers    []string // declared before the header was written
}

func (w *responseWriter) Header() http.Header { return w.hdr }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || w.done {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // (no 101 in HTTP/2)
			w.st.send(w, nil, false, code)
		}
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.hdr.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declLen = n
		} else {
			w.hdr.Del("Content-Length")
		}
	}
	for _, v := range w.hdr["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				w.trailers = append(w.trailers, k)
			}
		}
	}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errStreamClosed
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.declLen >= 0 && w.written+int64(len(p)) > w.declLen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.isHead {
		return len(p), nil
	}
	if w.buf == nil {
		w.buf = bodyBufs.Get().(*[]byte)
	}
	if len(*w.buf)+len(p) <= bodyBufSize {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	if err := w.st.send(w, p, false, 0); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends the header and what the body has buffered.
func (w *responseWriter) Flush() { w.FlushError() }

func (w *responseWriter) FlushError() error {
	if w.done {
		return errStreamClosed
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.st.send(w, nil, false, 0)
}

// SetReadDeadline bounds the wait for the request body's next bytes.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	st := w.st
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	st.readDeadline = t
	st.rdTimer = armed(st.rdTimer, t, func() {
		st.c.mu.Lock()
		st.cond.Broadcast()
		st.c.mu.Unlock()
	})
	return nil
}

// SetWriteDeadline bounds the response: a stream still sending then is
// reset.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	st := w.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.writeDeadline = t
	st.wdTimer = armed(st.wdTimer, t, func() {
		c.mu.Lock()
		if !st.closed && !st.localDone && !st.writeDeadline.IsZero() && !time.Now().Before(st.writeDeadline) {
			st.err = os.ErrDeadlineExceeded
			c.resetStream(st.id, http2.ErrCodeInternal)
		}
		c.mu.Unlock()
	})
	return nil
}

// EnableFullDuplex: an HTTP/2 stream always is.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// armed sets timer to call f at t (zero t: never).
func armed(timer *time.Timer, t time.Time, f func()) *time.Timer {
	if timer != nil {
		timer.Stop()
	}
	if t.IsZero() {
		return timer
	}
	if timer == nil {
		return time.AfterFunc(time.Until(t), f)
	}
	timer.Reset(time.Until(t))
	return timer
}

// finish ends the response when the handler returns.
func (w *responseWriter) finish() {
	if w.done {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader && w.declLen < 0 && bodyAllowed(w.status) && len(w.trailerFields()) == 0 && (!w.isHead || w.written > 0) {
		w.declLen = w.written
		w.hdr["Content-Length"] = []string{strconv.FormatInt(w.written, 10)}
	}
	w.st.send(w, nil, true, 0)
	w.done = true
}

func (w *responseWriter) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		bodyBufs.Put(w.buf)
		w.buf = nil
	}
}

// trailerFields are the trailers the handler set: declared ones, and
// any under http.TrailerPrefix.
func (w *responseWriter) trailerFields() []hpack.HeaderField {
	var f []hpack.HeaderField
	for _, k := range w.trailers {
		for _, v := range w.hdr[k] {
			f = append(f, hpackField(lowerKey(k), v))
		}
	}
	for k, vv := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				f = append(f, hpackField(strings.ToLower(name), v))
			}
		}
	}
	return f
}

// send queues the response's HEADERS if not yet, the buffered body and
// p, and with end the end of the stream (trailers too). A 1xx status
// sends an informational HEADERS only. It waits for flow-control window
// and for room in the connection's buffer.
func (st *stream) send(w *responseWriter, p []byte, end bool, info int) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := st.writable(); err != nil {
		return err
	}
	if info != 0 {
		if w.sentHeader {
			return nil
		}
		c.encodeHeader(info, w.hdr, nil)
		c.writeHeaderBlock(st.id, false)
		c.kick()
		return nil
	}
	var buf []byte
	if w.buf != nil {
		buf = *w.buf
	}
	var trailers []hpack.HeaderField
	if end {
		trailers = w.trailerFields()
	}
	if !w.sentHeader {
		w.sentHeader = true
		first := buf
		if len(first) == 0 {
			first = p
		}
		c.encodeHeader(w.status, w.hdr, first)
		c.writeHeaderBlock(st.id, end && len(buf)+len(p) == 0 && len(trailers) == 0)
		if end && len(buf)+len(p) == 0 && len(trailers) == 0 {
			st.localDone = true
		}
	}
	if len(buf) > 0 {
		if err := st.sendData(buf, end && len(p) == 0 && len(trailers) == 0); err != nil {
			return err
		}
		*w.buf = (*w.buf)[:0]
	}
	if len(p) > 0 || end && !st.localDone && len(trailers) == 0 {
		if err := st.sendData(p, end && len(trailers) == 0); err != nil {
			return err
		}
	}
	if end && len(trailers) > 0 && !st.localDone {
		for _, f := range trailers {
			c.enc.WriteField(f)
		}
		c.writeHeaderBlock(st.id, true)
		st.localDone = true
	}
	c.kick()
	if end {
		st.localDone = true
		if !st.remoteDone && !st.closed {
			// The answer is whole; the client need not send the rest
			// of its request (RFC 9113 §8.1).
			c.resetStream(st.id, http2.ErrCodeNo)
		} else {
			c.closeStream(st, nil)
		}
	}
	return nil
}

// writable says why the stream cannot send (c.mu held).
func (st *stream) writable() error {
	if st.err != nil {
		return st.err
	}
	if st.closed || st.localDone {
		return errStreamClosed
	}
	if st.c.werr != nil {
		return st.c.werr
	}
	return nil
}

// sendData queues p as DATA frames, as windows and the buffer allow
// (c.mu held; it is released while waiting). With end the last frame
// ends the stream, an empty one if p is.
func (st *stream) sendData(p []byte, end bool) error {
	c := st.c
	for {
		if err := st.writable(); err != nil {
			return err
		}
		if len(p) == 0 {
			if end {
				c.writeData(st.id, nil, true)
				st.localDone = true
			}
			return nil
		}
		n := min(int64(len(p)), int64(c.maxFrame), st.sendWin, c.sendWin)
		if n <= 0 || len(c.out) >= outMax {
			c.kick()
			st.waiting = true
			c.waiters++
			st.cond.Wait()
			c.waiters--
			st.waiting = false
			continue
		}
		last := int(n) == len(p)
		c.writeData(st.id, p[:n], end && last)
		st.sendWin -= n
		c.sendWin -= n
		p = p[n:]
		if last {
			if end {
				st.localDone = true
			}
			return nil
		}
	}
}

// encodeHeader HPACK-encodes a response header into c.hbuf. first is the
// start of the body, to sniff a Content-Type from if there is none.
func (c *conn) encodeHeader(status int, h http.Header, first []byte) {
	c.enc.WriteField(hpackField(":status", statusText(status)))
	for k, vv := range h {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue // connection-specific, not in HTTP/2
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		name := lowerKey(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				c.enc.WriteField(hpackField(name, v))
			}
		}
	}
	if status >= 200 {
		if _, ok := h["Content-Type"]; !ok && len(first) > 0 && bodyAllowed(status) && h.Get("Content-Encoding") == "" {
			c.enc.WriteField(hpackField("content-type", http.DetectContentType(first)))
		}
		if _, ok := h["Date"]; !ok {
			c.enc.WriteField(hpackField("date", httpDate()))
		}
	}
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

var statusTexts [600]string

func statusText(code int) string {
	if code < len(statusTexts) {
		if s := statusTexts[code]; s != "" {
			return s
		}
	}
	return strconv.Itoa(code)
}

func init() {
	for i := 100; i < len(statusTexts); i++ {
		statusTexts[i] = strconv.Itoa(i)
	}
}

// httpDate is the Date header, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.sec == now {
		return d.text
	}
	d := &date{sec: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type date struct {
	sec  int64
	text string
}

var dateCache atomic.Pointer[date]

func newResponseWriter(st *stream, isHead bool) *responseWriter {
	return &responseWriter{st: st, hdr: make(http.Header), declLen: -1, isHead: isHead}
}

// Stream is a request Server.Direct answers: with SendHeader, then
// SendData and SendTrailers; or, for a page of its own, through Writer.
type Stream struct {
	st     *stream
	isHead bool
	w      *responseWriter
	sent   bool // the response's HEADERS
}

// SendHeader sends the response's status and header fields (names lower
// case, no connection-specific ones); end if there is no body.
func (s *Stream) SendHeader(status int, fields []hpack.HeaderField, end bool) error {
	return s.sendFields(status, fields, end)
}

// SendTrailers ends the response with trailer fields.
func (s *Stream) SendTrailers(fields []hpack.HeaderField) error {
	return s.sendFields(0, fields, true)
}

func (s *Stream) sendFields(status int, fields []hpack.HeaderField, end bool) error {
	st := s.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := st.writable(); err != nil {
		return err
	}
	s.sent = true
	c.writeFields(st, status, fields, end)
	return nil
}

// writeFields sends a HEADERS block: the status (0: none, trailers) and
// the fields; end ends the stream (c.mu held).
func (c *conn) writeFields(st *stream, status int, fields []hpack.HeaderField, end bool) {
	if status != 0 {
		c.enc.WriteField(hpackField(":status", statusText(status)))
	}
	for _, f := range fields {
		c.enc.WriteField(f)
	}
	c.writeHeaderBlock(st.id, end)
	if end {
		st.localDone = true
		c.closeStream(st, nil)
	}
	c.kick()
}

// SendData sends body bytes, waiting for the client's window as it must;
// end ends the response.
func (s *Stream) SendData(p []byte, end bool) error {
	st := s.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	err := st.sendData(p, end)
	c.kick()
	if err == nil && end {
		c.closeStream(st, nil)
	}
	return err
}

// Writer is an http.ResponseWriter on the stream, for a response sent
// before nothing else was.
func (s *Stream) Writer() http.ResponseWriter {
	if s.w == nil {
		s.w = newResponseWriter(s.st, s.isHead)
	}
	return s.w
}

// TrySend sends a whole response (body nil: none) if the client's
// windows take it now, without waiting; false: nothing was sent. An error
// says the stream is gone (reset, or the connection): there is nothing
// to send to.
func (s *Stream) TrySend(status int, fields []hpack.HeaderField, body []byte) (bool, error) {
	st := s.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := st.writable(); err != nil {
		return false, err
	}
	n := int64(len(body))
	if n > st.sendWin || n > c.sendWin || len(c.out) >= outMax {
		return false, nil
	}
	s.sent = true
	c.writeFields(st, status, fields, n == 0)
	for len(body) > 0 {
		k := min(len(body), c.maxFrame)
		c.writeData(st.id, body[:k], k == len(body))
		body = body[k:]
	}
	if n > 0 {
		st.sendWin -= n
		c.sendWin -= n
		st.localDone = true
		c.closeStream(st, nil)
	}
	return true, nil
}

// Finish ends the response: what Writer wrote; else, if it is not
// whole, a 502 when nothing was sent, or a cut when part was (a client
// must not take a part for the whole).
func (s *Stream) Finish() {
	if s.w != nil {
		s.w.finish()
		s.w.release()
		return
	}
	s.end()
}

func (s *Stream) end() {
	st := s.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.closed || st.localDone {
		return
	}
	if !s.sent {
		c.writeFields(st, http.StatusBadGateway, nil, true)
		return
	}
	c.resetStream(st.id, http2.ErrCodeInternal)
}

// Reset cuts the response (the gear failed halfway).
func (s *Stream) Reset() {
	c := s.st.c
	c.mu.Lock()
	c.resetStream(s.st.id, http2.ErrCodeInternal)
	c.mu.Unlock()
}
