package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// HTTP/2 and HTTP/3 requests go to the gear on the fast path's pooled
// HTTP/1.1 connections (httpfast): the head written in one buffer, the
// response head parsed in place, no net/http transport (whose two
// goroutines per connection and channel hand-offs cost more than the
// request itself). Upgrades, extended CONNECT, Expect and bodies of
// unknown length keep httputil.ReverseProxy.

// pooledOK says whether req can take the pooled path.
func pooledOK(req *http.Request) bool {
	return req.ProtoMajor >= 2 && req.Method != http.MethodConnect && req.ContentLength >= 0 &&
		req.Header.Get("Expect") == "" && req.Header.Get("Upgrade") == ""
}

// hopHeaders are not passed on (RFC 9110 7.6.1), nor Host (in the head).
var hopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true, "Content-Length": true,
	"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true, "X-Real-Ip": true, "Forwarded": true}

// pooledHead renders req as an HTTP/1.1 head for the gear.
func (r *Router) pooledHead(out []byte, req *http.Request) []byte {
	out = append(out, req.Method...)
	out = append(out, ' ')
	out = append(out, req.URL.RequestURI()...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, req.Host...)
	out = append(out, "\r\n"...)
	for k, vs := range req.Header {
		if hopHeaders[k] {
			continue
		}
		for _, v := range vs {
			out = appendHeader(out, k, v)
		}
	}
	f := r.forwarded(req)
	out = appendHeader(out, "X-Real-IP", f.realIP)
	for _, v := range f.forwarded {
		out = appendHeader(out, "Forwarded", v)
	}
	out = appendHeader(out, "X-Forwarded-For", f.xff)
	out = appendHeader(out, "X-Forwarded-Host", f.xfh)
	out = appendHeader(out, "X-Forwarded-Proto", f.xfp)
	if req.ContentLength > 0 {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, req.ContentLength, 10)
		out = append(out, "\r\n"...)
	}
	return append(out, "\r\n"...)
}

func appendHeader(out []byte, k, v string) []byte {
	out = append(out, k...)
	out = append(out, ": "...)
	out = append(out, v...)
	return append(out, "\r\n"...)
}

// forwardPooled proxies req to ep over a pooled connection and records it.
func (r *Router) forwardPooled(w http.ResponseWriter, req *http.Request, rt *Route, ep string, st *appStats, start time.Time) {
	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	head := r.pooledHead((*hb)[:0], req)
	*hb = head
	hreq := httpfast.Request{ContentLength: req.ContentLength, IsHead: req.Method == http.MethodHead}
	var body *bufio.Reader
	var counted *countingBody
	if req.ContentLength > 0 {
		counted = &countingBody{ReadCloser: req.Body}
		body = httpfast.Readers.Get().(*bufio.Reader)
		body.Reset(counted)
		defer func() { body.Reset(nil); httpfast.Readers.Put(body) }()
	}
	var resp httpfast.Response
	dial := func() (*httpfast.Conn, error) { return r.dialBackend(ep, rt) }
	bc, err := r.pool.Exchange(ep, dial, head, body, &hreq, &resp, rt.ReadTimeout)
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, errReadTimeout) {
			status = http.StatusGatewayTimeout
		}
		if req.Context().Err() == nil {
			r.proxyError(w, req.WithContext(withTarget(req, ep, rt)), err)
		}
		r.obs.record(req, st, start, status, 0, 0, ep)
		return
	}
	h := w.Header()
	for _, span := range resp.Headers {
		line := resp.Head[span[0]:span[1]]
		colon := bytes.IndexByte(line, ':')
		name := textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
		if name == "Transfer-Encoding" {
			continue
		}
		h[name] = append(h[name], string(bytes.TrimSpace(line[colon+1:])))
	}
	bc.BR.Discard(resp.InReader())
	w.WriteHeader(resp.Status)
	// Responses of unknown length and event streams go out as they come.
	stream := resp.Chunked || resp.UntilClose || strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
	var dst io.Writer = w
	if stream {
		dst = flushWriter{w, http.NewResponseController(w)}
	}
	bp := httpfast.CopyBufs.Get().(*[]byte)
	var n int64
	switch {
	case resp.Chunked:
		n, err = io.CopyBuffer(dst, httputil.NewChunkedReader(bc.BR), *bp)
		if err == nil {
			err = trailers(bc.BR, h)
		}
	case resp.UntilClose:
		n, err = io.CopyBuffer(dst, bc.BR, *bp)
		resp.Reusable = false
	case resp.ContentLength > 0:
		n, err = io.CopyBuffer(dst, io.LimitReader(bc.BR, resp.ContentLength), *bp)
		if err == nil && n < resp.ContentLength {
			err = io.ErrUnexpectedEOF
		}
	}
	httpfast.CopyBufs.Put(bp)
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.pool.Put(ep, bc)
	}
	var in int64
	if counted != nil {
		in = counted.n.Load()
	}
	r.obs.record(req, st, start, resp.Status, in, n, ep)
}

// trailers reads a chunked body's trailer section into h as trailers.
func trailers(br *bufio.Reader, h http.Header) error {
	return readTrailers(br, func(k, v []byte) { h.Add(http.TrailerPrefix+string(k), string(v)) })
}

// readTrailers reads a chunked body's trailer section, each field to add.
func readTrailers(br *bufio.Reader, add func(k, v []byte)) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return nil
		}
		if colon := bytes.IndexByte(line, ':'); colon > 0 {
			add(line[:colon], bytes.TrimSpace(line[colon+1:]))
		}
	}
}

// flushWriter flushes every write (streams: server-sent events, long
// responses of unknown length).
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
