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
// Direct, on the connection's reader goroutine, before any http.Request
// or goroutine is made): the request's fields are written as an HTTP/1.1
// head and parsed by the fast path's own parser, so that exactly the
// requests HTTP/1.1 would send on the fast path go, checked the same way
// and with the same forwarded headers; an event loop exchanges it with
// the gear (loopH2.go), and the response goes back as HEADERS and DATA
// frames. Anything else (the platform host, redirects, idle apps, bodies,
// extended CONNECT…) goes to ServeHTTP.

var (
	h2Fields     = sync.Pool{New: func() any { f := make([]hpack.HeaderField, 0, 16); return &f }}
	fastRequests = sync.Pool{New: func() any { return new(httpfast.Request) }}
)

var errUnasked101 = errors.New("the app switched protocols unasked")

// h2Exchange is an HTTP/2 request of the fast path on its way to a gear
// and back: on an event loop (loopH2.go), or on a goroutine.
type h2Exchange struct {
	s      *h2.Stream
	rq     *h2.Request
	host   string
	isHead bool
	f      flight
	hb     *[]byte // the head for the gear (httpfast.HeadBufs), kept for a retry until the answer begins
}

func (x *h2Exchange) freeHead() {
	if x.hb != nil {
		httpfast.HeadBufs.Put(x.hb)
		x.hb = nil
	}
}

// serveH2Direct takes rq on the fast path, or returns false having sent
// nothing. It runs on the h2 connection's reader goroutine: the request
// goes to a gear from an event loop (or, without loops, a goroutine).
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
	x := &h2Exchange{s: s, rq: rq, host: host, isHead: req.IsHead, f: flight{start: time.Now()}}
	x.f.rt, x.f.ep, x.f.cnt = r.pick(host)
	if x.f.ep == "" {
		return false // the route lost its gears meanwhile: ServeHTTP says so
	}
	r.h2Direct.Add(1)
	x.f.st = x.f.rt.stats
	x.f.st.begin()
	clientIP, _, _ := net.SplitHostPort(rq.RemoteAddr)
	x.hb = httpfast.HeadBufs.Get().(*[]byte)
	*x.hb = r.requestHead((*x.hb)[:0], req, clientIP, "https", r.trusted(clientIP))
	if x.f.entry = r.fastEntry(x.f.st, req, rq.RemoteAddr); x.f.entry != nil {
		x.f.entry.proto = "HTTP/2.0"
	}
	if ls := r.loops.Load(); ls == nil || !ls.takeH2(x) {
		go r.exchangeH2(x)
	}
	return true
}

// exchangeH2 sends x's request on a pooled connection and answers it,
// on a goroutine.
func (r *Router) exchangeH2(x *h2Exchange) {
	var resp httpfast.Response
	req := httpfast.Request{IsHead: x.isHead}
	bc, err := r.exchange(&x.f, x.host, *x.hb, nil, &req, &resp)
	r.h2Answer(x, bc, &resp, err)
}

// h2Finish reads the answer to x's request, sent on gc, and sends it on
// (a loop handed it over: it does not wait).
func (r *Router) h2Finish(x *h2Exchange, gc net.Conn) {
	bc := httpfast.NewConn(gc)
	var resp httpfast.Response
	err := bc.ReadResponse(&httpfast.Request{IsHead: x.isHead}, &resp, x.f.rt.ReadTimeout)
	if err != nil {
		bc.Drop()
	}
	r.h2Answer(x, bc, &resp, err)
}

// h2Answer sends the gear's response (its head read into resp) to x's
// stream, or the page for err, and ends the exchange.
func (r *Router) h2Answer(x *h2Exchange, bc *httpfast.Conn, resp *httpfast.Response, err error) {
	defer func() {
		x.f.land()
		x.freeHead()
		x.s.Finish()
	}()
	if err == nil && resp.Status == http.StatusSwitchingProtocols {
		bc.Drop()
		err = errUnasked101
	}
	if err != nil {
		status, title, msg := r.gearFailed(err, x.host, &x.f)
		n := pageFor(x.s.Writer(), fieldValue(x.rq.Fields, "accept"), status, title, msg)
		r.obs.recordEntry(x.f.st, x.f.entry, x.f.start, status, 0, int64(n), "")
		return
	}
	n, err := r.sendH2Response(x.s, bc, resp)
	if err != nil || !resp.Reusable {
		bc.Drop()
	} else {
		r.pool.Put(x.f.ep, bc)
	}
	r.obs.recordEntry(x.f.st, x.f.entry, x.f.start, resp.Status, 0, n, x.f.ep)
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

// validValue says v may be a field value: no controls but tabs.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
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
	fields := r.h2Header((*fp)[:0], resp)
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

// h2Header appends the response's header fields as HTTP/2 sends them:
// names in lower case, no Transfer-Encoding (the connection headers are
// not in resp.Headers), Alt-Svc when HTTP/3 is on.
func (r *Router) h2Header(fields []hpack.HeaderField, resp *httpfast.Response) []hpack.HeaderField {
	for _, span := range resp.Headers {
		line := resp.Head[span[0]:span[1]]
		colon := bytes.IndexByte(line, ':')
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		if httpfast.EqualFold(name, "transfer-encoding") || !httpfast.Token(name) || !validValue(value) {
			continue // (a name or value HTTP/2 clients refuse: the header, not the response)
		}
		fields = append(fields, hpack.HeaderField{Name: h2.LowerName(name), Value: string(value)})
	}
	if r.h3alt != "" {
		fields = append(fields, hpack.HeaderField{Name: "alt-svc", Value: r.h3alt})
	}
	return fields
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
