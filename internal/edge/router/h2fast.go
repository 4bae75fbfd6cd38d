package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/gantry-paas/gantry/internal/edge/h2"
	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// HTTP/2 requests without a body take the fast path too (edge/h2's
// Direct, on the stream's goroutine, before any http.Request is made):
// the request's fields are written as an HTTP/1.1 head and parsed by the
// fast path's own parser, so that exactly the requests HTTP/1.1 would
// send on the fast path go, checked the same way and with the same
// forwarded headers; the gear's response goes back as HEADERS and DATA
// frames, its body sent as it comes. Anything else (the platform host,
// redirects, idle apps, bodies, extended CONNECT…) goes to ServeHTTP.

var (
	h2Fields     = sync.Pool{New: func() any { f := make([]hpack.HeaderField, 0, 16); return &f }}
	fastRequests = sync.Pool{New: func() any { return new(httpfast.Request) }}
)

var errUnasked101 = errors.New("the app switched protocols unasked")

// serveH2Direct answers rq on the fast path, or returns false having
// sent nothing.
func (r *Router) serveH2Direct(s *h2.Stream, rq *h2.Request) bool {
	if rq.Method == http.MethodConnect {
		return false
	}
	host := hostOnly(rq.Authority)
	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	head := appendH2Head((*hb)[:0], rq)
	*hb = head
	req := fastRequests.Get().(*httpfast.Request)
	defer fastRequests.Put(req)
	*req = httpfast.Request{Headers: req.Headers[:0], FromProxy: req.FromProxy[:0]}
	if req.ParseHead(head, false) != nil || !r.takesFast(req, host, true) || req.Upgrade != nil {
		return false
	}
	f := flight{start: time.Now()}
	f.rt, f.ep, f.cnt = r.pick(host)
	if f.ep == "" {
		return false // the route lost its gears meanwhile: ServeHTTP says so
	}
	r.h2Direct.Add(1)
	f.st = f.rt.stats
	f.st.begin()
	defer f.land()
	clientIP, _, _ := net.SplitHostPort(rq.RemoteAddr)
	ob := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(ob)
	out := r.requestHead((*ob)[:0], req, clientIP, "https", r.trusted(clientIP))
	*ob = out
	if f.entry = r.fastEntry(f.st, req, rq.RemoteAddr); f.entry != nil {
		f.entry.proto = "HTTP/2.0"
	}
	var resp httpfast.Response
	bc, err := r.exchange(&f, host, out, nil, req, &resp)
	if err == nil && resp.Status == http.StatusSwitchingProtocols {
		bc.Drop()
		err = errUnasked101
	}
	if err != nil {
		status, title, msg := r.gearFailed(err, host, &f)
		n := pageFor(s.Writer(), fieldValue(rq.Fields, "accept"), status, title, msg)
		r.obs.recordEntry(f.st, f.entry, f.start, status, 0, int64(n), "")
		return true
	}
	n, err := r.sendH2Response(s, bc, &resp)
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.pool.Put(f.ep, bc)
	}
	r.obs.recordEntry(f.st, f.entry, f.start, resp.Status, 0, n, f.ep)
	return true
}

// appendH2Head renders rq as an HTTP/1.1 request head.
func appendH2Head(out []byte, rq *h2.Request) []byte {
	out = append(out, rq.Method...)
	out = append(out, ' ')
	out = append(out, rq.Path...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, rq.Authority...)
	out = append(out, "\r\n"...)
	cookies := 0
	for _, f := range rq.Fields {
		switch f.Name {
		case "host", "te":
			continue // :authority is the host; TE (trailers) is hop-by-hop
		case "cookie":
			cookies++
			continue
		}
		out = append(out, h2.CanonicalName(f.Name)...)
		out = append(out, ": "...)
		out = append(out, f.Value...)
		out = append(out, "\r\n"...)
	}
	if cookies > 0 { // one line again (RFC 9113 §8.2.3)
		out = append(out, "Cookie: "...)
		sep := false
		for _, f := range rq.Fields {
			if f.Name == "cookie" {
				if sep {
					out = append(out, "; "...)
				}
				out = append(out, f.Value...)
				sep = true
			}
		}
		out = append(out, "\r\n"...)
	}
	return append(out, "\r\n"...)
}

func fieldValue(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// sendH2Response sends the gear's response (its head parsed in resp, the
// rest in bc) as frames; it returns the body bytes sent.
func (r *Router) sendH2Response(s *h2.Stream, bc *httpfast.Conn, resp *httpfast.Response) (int64, error) {
	fp := h2Fields.Get().(*[]hpack.HeaderField)
	defer func() { *fp = (*fp)[:0]; h2Fields.Put(fp) }()
	fields := *fp
	for _, span := range resp.Headers {
		line := resp.Head[span[0]:span[1]]
		colon := bytes.IndexByte(line, ':')
		name := line[:colon]
		if httpfast.EqualFold(name, "transfer-encoding") {
			continue
		}
		fields = append(fields, hpack.HeaderField{Name: h2.LowerName(name), Value: string(bytes.TrimSpace(line[colon+1:]))})
	}
	if r.h3alt != "" {
		fields = append(fields, hpack.HeaderField{Name: "alt-svc", Value: r.h3alt})
	}
	*fp = fields
	br := bc.BR
	br.Discard(resp.InReader())
	noBody := !resp.Chunked && !resp.UntilClose && resp.ContentLength == 0
	if err := s.SendHeader(resp.Status, fields, noBody); err != nil || noBody {
		return 0, err
	}
	var n int64
	switch {
	case resp.ContentLength > 0:
		for left := resp.ContentLength; left > 0; {
			if br.Buffered() == 0 {
				if _, err := br.Peek(1); err != nil {
					s.Reset()
					return n, io.ErrUnexpectedEOF
				}
			}
			b, _ := br.Peek(int(min(int64(br.Buffered()), left)))
			left -= int64(len(b))
			if err := s.SendData(b, left == 0); err != nil {
				return n, err
			}
			n += int64(len(b))
			br.Discard(len(b))
		}
		return n, nil
	case resp.Chunked:
		n, err := relayH2(s, httputil.NewChunkedReader(br))
		if err != nil {
			return n, err
		}
		fields = fields[:0]
		if err := readTrailers(br, func(k, v []byte) {
			fields = append(fields, hpack.HeaderField{Name: h2.LowerName(k), Value: string(v)})
		}); err != nil {
			s.Reset()
			return n, err
		}
		*fp = fields
		if len(fields) > 0 {
			return n, s.SendTrailers(fields)
		}
		return n, s.SendData(nil, true)
	default: // until the gear closes
		n, err := relayH2(s, br)
		if err != nil {
			return n, err
		}
		return n, s.SendData(nil, true)
	}
}

// relayH2 sends src as DATA until its end (not ending the stream).
func relayH2(s *h2.Stream, src io.Reader) (int64, error) {
	bp := httpfast.CopyBufs.Get().(*[]byte)
	defer httpfast.CopyBufs.Put(bp)
	var n int64
	for {
		k, err := src.Read(*bp)
		if k > 0 {
			if werr := s.SendData((*bp)[:k], false); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			s.Reset()
			return n, err
		}
	}
}
