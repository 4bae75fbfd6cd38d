// Package httpfast is the allocation-free HTTP/1.1 proxy path shared by
// the router (reverse proxy to gears) and the egress router (forward
// proxy): request heads parsed in place, pooled upstream connections,
// responses framed by Content-Length or chunks, and the hand-off of a
// connection, with the bytes already read, to net/http for everything
// unusual. The callers decide what to do with a request; this package
// only reads and writes HTTP.
package httpfast

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BufSize is the reader size: a request head larger than this is handed
// off.
const BufSize = 4 << 10

var (
	Readers  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, BufSize) }}
	HeadBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
	CopyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	// ErrHandOff says the request is for net/http.
	ErrHandOff = errors.New("hand off to net/http")
	// ErrIncomplete is ParseBuffered's: the head is not all in the buffer.
	ErrIncomplete = errors.New("request head not all read yet")
	// ErrReadTimeout is an upstream that did not start its answer in time.
	ErrReadTimeout = errors.New("the app did not answer in time")
)

var slash = []byte("/")

// NewConn wraps a fresh upstream connection.
func NewConn(c net.Conn) *Conn {
	br := Readers.Get().(*bufio.Reader)
	br.Reset(c)
	return &Conn{Conn: c, BR: br}
}

// Closing says CloseIdle was called.
func (s *ConnSet) Closing() bool { return s.closing.Load() }

// Request is a parsed request head; the byte slices point into the
// reader's buffer and are valid until the head is consumed.
type Request struct {
	Head          []byte // the whole head, CRLFCRLF included
	IsHead        bool   // a HEAD request (kept: the head's bytes do not outlive the body)
	Method        []byte
	Target        []byte
	Host          []byte
	Authority     []byte // forward proxy: the URL's host[:port]
	XFF, XFP, XFH []byte
	ContentLength int64
	Close         bool
	WantsUpgrade  bool     // Connection: upgrade
	Upgrade       []byte   // the Upgrade header (websocket)
	Headers       [][2]int // start, end of each header line to forward, in head
	// FromProxy are header lines (Forwarded, X-Real-IP) that a reverse
	// proxy forwards only from a trusted proxy, as it does X-Forwarded-*.
	FromProxy [][2]int
	XRealIP   []byte
}

// Parse reads a request head without consuming it: the caller discards
// it when the fast path takes the request, or hands it off. A reverse
// proxy takes origin-form targets (/path) and needs Host; a forward proxy
// (proxy) takes absolute http:// URLs, whose authority is Authority and
// whose path becomes Target (Host is then not forwarded: the caller
// writes the authority as Host).
func (q *Request) Parse(br *bufio.Reader, proxy bool) error {
	return q.parse(br, proxy, true)
}

// ParseBuffered is Parse without reading: ErrIncomplete when the head is
// not all in br's buffer yet (the caller then bounds the wait for the
// rest, and calls Parse).
func (q *Request) ParseBuffered(br *bufio.Reader, proxy bool) error {
	return q.parse(br, proxy, false)
}

func (q *Request) parse(br *bufio.Reader, proxy, wait bool) error {
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
		if !wait {
			return ErrIncomplete
		}
		if br.Buffered() >= BufSize {
			return ErrHandOff // a large head: net/http has the limits for it
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if br.Buffered() > 0 && err != io.EOF {
				return ErrHandOff
			}
			return err
		}
	}
	return q.ParseHead(head, proxy)
}

// ParseHead parses a whole head (CRLFCRLF included) held elsewhere: an
// HTTP/2 request rendered as HTTP/1.1, to take the checks above.
func (q *Request) ParseHead(head []byte, proxy bool) error {
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) || bytes.Index(head, []byte("\r\n\r\n")) != len(head)-4 {
		return ErrHandOff
	}
	q.Head = head
	lineEnd := bytes.IndexByte(head, '\n')
	line := head[:lineEnd]
	if len(line) < 2 || line[len(line)-1] != '\r' {
		return ErrHandOff
	}
	line = line[:len(line)-1]
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 || string(line[sp2+1:]) != "HTTP/1.1" {
		return ErrHandOff
	}
	q.Method, q.Target = line[:sp1], line[sp1+1:sp2]
	if !validTarget(q.Target) {
		return ErrHandOff // net/http refuses it (or answers it itself)
	}
	q.IsHead = string(q.Method) == "HEAD"
	if proxy {
		if len(q.Target) < 8 || !EqualFold(q.Target[:7], "http://") || !Token(q.Method) {
			return ErrHandOff // CONNECT, https://, origin-form: net/http answers
		}
		rest := q.Target[7:]
		end := bytes.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		q.Authority = rest[:end]
		if len(q.Authority) == 0 || bytes.IndexByte(q.Authority, '@') >= 0 {
			return ErrHandOff // no host, or user info
		}
		switch {
		case end == len(rest):
			q.Target = slash
		case rest[end] == '/':
			q.Target = rest[end:]
		default:
			return ErrHandOff // http://host?query: net/http makes it /?query
		}
	} else if len(q.Target) == 0 || q.Target[0] != '/' || !Token(q.Method) {
		return ErrHandOff
	}
	q.ContentLength = 0
	q.Headers, q.FromProxy, q.XRealIP = q.Headers[:0], q.FromProxy[:0], nil
	seenCL := false
	pos := lineEnd + 1
	for pos < len(head)-2 {
		end := pos + bytes.IndexByte(head[pos:], '\n')
		if end < pos+1 || head[end-1] != '\r' {
			return ErrHandOff // bare LF
		}
		l := head[pos : end-1]
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !Token(l[:colon]) {
			return ErrHandOff // obs-fold, spaces before the colon, bad names
		}
		name, value := l[:colon], trimOWS(l[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return ErrHandOff // controls: net/http refuses them
			}
		}
		forward := true
		switch {
		case EqualFold(name, "host"):
			if q.Host != nil {
				return ErrHandOff
			}
			q.Host, forward = value, !proxy
		case proxy && EqualFold(name, "proxy-authorization"):
			forward = false
		case EqualFold(name, "content-length"):
			n, ok := ParseLength(value)
			if !ok || seenCL {
				return ErrHandOff // net/http refuses +44, -0, 0x10, " 1 2"
			}
			q.ContentLength, seenCL = n, true
		case EqualFold(name, "connection"):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = trimOWS(tok)
				switch {
				case EqualFold(tok, "close"):
					q.Close = true
				case EqualFold(tok, "keep-alive"):
				case EqualFold(tok, "upgrade"):
					q.WantsUpgrade = true
				default:
					return ErrHandOff // headers declared hop-by-hop
				}
			}
			forward = false
		case EqualFold(name, "upgrade"):
			if !EqualFold(value, "websocket") || q.Upgrade != nil {
				return ErrHandOff // h2c and other protocols: net/http's business
			}
			q.Upgrade, forward = value, false
		case EqualFold(name, "transfer-encoding"), EqualFold(name, "expect"), EqualFold(name, "te"), EqualFold(name, "trailer"):
			return ErrHandOff
		case EqualFold(name, "keep-alive"), EqualFold(name, "proxy-connection"):
			forward = false
		case EqualFold(name, "x-forwarded-for"):
			if q.XFF != nil {
				return ErrHandOff
			}
			q.XFF, forward = value, false
		case EqualFold(name, "x-forwarded-proto"):
			q.XFP, forward = value, false
		case EqualFold(name, "x-forwarded-host"):
			q.XFH, forward = value, false
		case !proxy && EqualFold(name, "forwarded"):
			q.FromProxy, forward = append(q.FromProxy, [2]int{pos, end + 1}), false
		case !proxy && EqualFold(name, "x-real-ip"):
			if q.XRealIP != nil {
				return ErrHandOff
			}
			q.FromProxy, forward = append(q.FromProxy, [2]int{pos, end + 1}), false
			q.XRealIP = value
		}
		if forward {
			q.Headers = append(q.Headers, [2]int{pos, end + 1})
		}
		pos = end + 1
	}
	if q.Host == nil && !proxy || q.WantsUpgrade != (q.Upgrade != nil) || q.Upgrade != nil && (string(q.Method) != "GET" || q.ContentLength > 0) {
		return ErrHandOff
	}
	return nil
}

// validTarget is net/http's view of a request target: no spaces or
// controls, and well-formed percent escapes in the path.
func validTarget(t []byte) bool {
	inPath := true
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c <= ' ' || c == 0x7f:
			return false
		case c == '?':
			inPath = false
		case c == '%' && inPath:
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// ParseLength reads a Content-Length value as RFC 9110 has it: digits
// only (no sign, no spaces, no base prefix), at most 18 of them.
func ParseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// Conn is a pooled connection to a gear.
type Conn struct {
	net.Conn
	BR   *bufio.Reader
	used time.Time
	dl   Deadline
}

// Deadline is the read deadline set on a connection, kept here so that it
// moves only when it must: Within asks for reads to time out no sooner
// than d from now and no later than an eighth of d after that, and a
// deadline already in that window stays. A busy keep-alive connection
// then touches its timer once in a while instead of twice per request
// (each set is a clock read and a timer update in the runtime).
type Deadline struct{ by time.Time }

// Within bounds reads on c to between d and d + d/8 from now (d <= 0: no
// deadline).
func (dl *Deadline) Within(c net.Conn, d time.Duration) {
	if d <= 0 {
		dl.None(c)
		return
	}
	now := time.Now()
	if dl.by.IsZero() || dl.by.Before(now.Add(d)) || dl.by.After(now.Add(d+d/8)) {
		dl.by = now.Add(d + d/8)
		c.SetReadDeadline(dl.by)
	}
}

// None lifts the deadline, if any.
func (dl *Deadline) None(c net.Conn) {
	if !dl.by.IsZero() {
		dl.by = time.Time{}
		c.SetReadDeadline(time.Time{})
	}
}

// Pool keeps idle connections per gear endpoint.
type Pool struct {
	mu   sync.Mutex
	idle map[string][]*Conn
	// Spare, if set, is another keeper of idle connections (the
	// router's event loops) that Exchange takes one from when the pool
	// has none for the endpoint (nil: neither has).
	Spare func(ep string) *Conn
}

const (
	// PoolIdleTimeout is how long an idle connection to a gear is kept:
	// less than Node.js's 5 s keep-alive.
	PoolIdleTimeout = 4 * time.Second
	// PoolMaxPerHost is how many idle connections to one gear are kept.
	PoolMaxPerHost = 1024
)

func (p *Pool) Get(ep string) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[ep]
	if len(list) == 0 {
		return nil
	}
	for len(list) > 0 {
		bc := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(bc.used) < PoolIdleTimeout {
			p.idle[ep] = list
			return bc
		}
		bc.Close()
	}
	p.idle[ep] = list
	return nil
}

func (p *Pool) Put(ep string, bc *Conn) {
	bc.used = time.Now()
	p.mu.Lock()
	if p.idle == nil {
		p.idle = map[string][]*Conn{}
	}
	if len(p.idle[ep]) < PoolMaxPerHost {
		p.idle[ep] = append(p.idle[ep], bc)
		bc = nil
	}
	p.mu.Unlock()
	if bc != nil {
		bc.Close()
	}
}

// PruneLoop prunes every second until ctx ends, then once more.
func (p *Pool) PruneLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.Prune()
			return
		case <-tick.C:
			p.Prune()
		}
	}
}

// Prune closes connections idle too long (PruneLoop calls it every second).
func (p *Pool) Prune() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ep, list := range p.idle {
		keep := list[:0]
		for _, bc := range list {
			if time.Since(bc.used) < PoolIdleTimeout {
				keep = append(keep, bc)
			} else {
				bc.Close()
			}
		}
		if len(keep) == 0 {
			delete(p.idle, ep)
		} else {
			p.idle[ep] = keep
		}
	}
}

// Exchange sends a request head (and its body from cbr) upstream over a
// pooled connection to key, or a new one from dial, and reads the
// response head into resp. A pooled connection the other end closed
// meanwhile is replaced once, if nothing of a body was sent. Upgrades
// always get a new connection. The caller puts the connection back (Put)
// or drops it once the response is through.
func (p *Pool) Exchange(key string, dial func() (*Conn, error), head []byte, cbr *bufio.Reader, req *Request, resp *Response, readTimeout time.Duration) (*Conn, error) {
	var bc *Conn
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		reused := false
		if req.Upgrade == nil {
			if bc = p.Get(key); bc == nil && p.Spare != nil {
				bc = p.Spare(key)
			}
		}
		if bc != nil {
			reused = true
		} else if bc, err = dial(); err != nil {
			return nil, err
		}
		err = SendRequest(bc, head, cbr, req)
		if err == nil {
			err = bc.ReadResponse(req, resp, readTimeout)
		}
		if err == nil {
			return bc, nil
		}
		bc.Drop()
		if !reused || req.ContentLength > 0 || resp.Started {
			break
		}
	}
	return nil, err
}

// ReadResponse reads the response head to req into resp: the gear must
// start it within readTimeout (0: no limit), and its body, read by the
// caller, may take as long as it takes (a stream, a download).
func (bc *Conn) ReadResponse(req *Request, resp *Response, readTimeout time.Duration) error {
	err := resp.ReadHead(bc.BR, req, readTimeout, bc)
	if err == nil && !resp.bodyBuffered(bc.BR) {
		bc.dl.None(bc.Conn)
	}
	return err
}

func (bc *Conn) Drop() {
	bc.Conn.Close()
	bc.BR.Reset(nil)
	Readers.Put(bc.BR)
}

// sendRequest writes the head and the body (Content-Length bytes) to the
// gear: a body already buffered goes in the same write.
func SendRequest(bc *Conn, head []byte, cbr *bufio.Reader, req *Request) error {
	if req.ContentLength == 0 {
		_, err := bc.Write(head)
		return err
	}
	if int64(cbr.Buffered()) >= req.ContentLength && len(head)+int(req.ContentLength) <= 16<<10 {
		body, _ := cbr.Peek(int(req.ContentLength))
		buf := append(head, body...)
		cbr.Discard(int(req.ContentLength))
		_, err := bc.Write(buf)
		return err
	}
	if _, err := bc.Write(head); err != nil {
		return err
	}
	bp := CopyBufs.Get().(*[]byte)
	defer CopyBufs.Put(bp)
	_, err := io.CopyBuffer(bc.Conn, io.LimitReader(cbr, req.ContentLength), *bp)
	return err
}

// Response is a parsed response head.
type Response struct {
	Status        int
	Head          []byte
	ContentLength int64 // -1: none given
	Chunked       bool
	UntilClose    bool
	Reusable      bool
	Started       bool // a byte of the response arrived
	Headers       [][2]int
	gathered      bool // Head is a buffer of its own, not the reader's
}

// ReadHead reads and parses the response head from br; with a read
// timeout, the gear's c (nil: none) must start its answer within it.
// The deadline stays set when the head and the whole body are in br
// (nothing more will be read for this response); the caller lifts it
// otherwise (Exchange does).
func (p *Response) ReadHead(br *bufio.Reader, req *Request, readTimeout time.Duration, c *Conn) error {
	if c != nil {
		c.dl.Within(c.Conn, readTimeout)
	}
	for {
		if _, err := br.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.Started = true // not worth retrying: the app is slow
				return ErrReadTimeout
			}
			return err
		}
		p.Started, p.gathered = true, false
		var head []byte
		for {
			buf, _ := br.Peek(br.Buffered())
			if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
				head = buf[:i+4]
				break
			}
			if br.Buffered() >= BufSize {
				// Larger than the reader (long cookies, policies):
				// gathered in a buffer of its own.
				var err error
				if head, err = gatherHead(br); err != nil {
					return err
				}
				p.gathered = true
				break
			}
			if _, err := br.Peek(br.Buffered() + 1); err != nil {
				return err
			}
		}
		if err := p.Parse(head, req); err != nil {
			return err
		}
		if p.Status == http.StatusSwitchingProtocols && req.Upgrade != nil {
			return nil
		}
		if p.Status >= 100 && p.Status < 200 {
			return errors.New("informational responses are not expected here") // Expect: 100-continue goes to net/http
		}
		return nil
	}
}

// bodyBuffered says the response's whole body (none, or Content-Length
// bytes) is already in br after its head.
func (p *Response) bodyBuffered(br *bufio.Reader) bool {
	if p.Status == http.StatusSwitchingProtocols || p.ContentLength < 0 {
		return false
	}
	return int64(br.Buffered()-p.InReader()) >= p.ContentLength
}

// MaxResponseHead bounds a response head from an app: what browsers take
// (Chromium's limit), and what an app can make the router hold per
// response in flight.
const MaxResponseHead = 256 << 10

// gatherHead reads a response head larger than the reader into a buffer
// of its own, consuming exactly the head (the body stays in br).
func gatherHead(br *bufio.Reader) ([]byte, error) {
	end := []byte("\r\n\r\n")
	var head []byte
	for {
		chunk, _ := br.Peek(br.Buffered())
		// The terminator may straddle what is gathered and this chunk.
		from := max(len(head)-len(end)+1, 0)
		n := len(head)
		head = append(head, chunk...)
		if i := bytes.Index(head[from:], end); i >= 0 {
			stop := from + i + len(end)
			br.Discard(stop - n)
			return head[:stop], nil
		}
		br.Discard(len(chunk))
		if len(head) > MaxResponseHead {
			return nil, fmt.Errorf("response headers larger than %d KiB", MaxResponseHead>>10)
		}
		if _, err := br.Peek(1); err != nil {
			return nil, err
		}
	}
}

// InReader is how many bytes of the head are still in the reader (none
// when it was gathered apart).
func (p *Response) InReader() int {
	if p.gathered {
		return 0
	}
	return len(p.Head)
}

func (p *Response) Parse(head []byte, req *Request) error {
	p.Head, p.Headers, p.ContentLength, p.Chunked, p.UntilClose, p.Reusable = head, p.Headers[:0], -1, false, false, true
	lineEnd := bytes.IndexByte(head, '\n')
	line := head[:lineEnd]
	if len(line) < 13 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errors.New("malformed status line from the app")
	}
	d0, d1, d2 := line[9]-'0', line[10]-'0', line[11]-'0'
	if d0 < 1 || d0 > 9 || d1 > 9 || d2 > 9 {
		return errors.New("malformed status from the app")
	}
	status := int(d0)*100 + int(d1)*10 + int(d2)
	p.Status = status
	if line[7] == '0' {
		p.Reusable = false // HTTP/1.0 gear
	}
	pos := lineEnd + 1
	for pos < len(head)-2 {
		end := pos + bytes.IndexByte(head[pos:], '\n')
		if end < pos {
			return errors.New("malformed header from the app")
		}
		l := head[pos:end]
		for len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return errors.New("malformed header from the app")
		}
		name, value := l[:colon], trimOWS(l[colon+1:])
		forward := true
		switch {
		case EqualFold(name, "content-length"):
			n, ok := ParseLength(value)
			if !ok || p.ContentLength >= 0 && n != p.ContentLength {
				return errors.New("bad Content-Length from the app")
			}
			p.ContentLength = n
		case EqualFold(name, "transfer-encoding"):
			if EqualFold(value, "chunked") {
				p.Chunked = true
			} else {
				p.UntilClose = true
			}
		case EqualFold(name, "connection"):
			if containsFold(value, "close") {
				p.Reusable = false
			}
			forward = false
		case EqualFold(name, "keep-alive"), EqualFold(name, "proxy-connection"), EqualFold(name, "upgrade"):
			forward = false
		}
		if forward {
			p.Headers = append(p.Headers, [2]int{pos, end + 1})
		}
		pos = end + 1
	}
	noBody := req.IsHead || status == 204 || status == 304 || status < 200
	switch {
	case noBody:
		p.ContentLength, p.Chunked, p.UntilClose = 0, false, false
	case p.Chunked:
		p.ContentLength = -1
	case p.ContentLength < 0:
		p.UntilClose = true
	}
	if p.UntilClose {
		p.Reusable = false
	}
	return nil
}

// SendResponse writes the response head, with the extra header lines
// (each ending in CRLF), and body to the client. It reports whether the
// client connection stays open, and the body bytes.
func SendResponse(c net.Conn, bc *Conn, p *Response, req *Request, extra []byte) (bool, int64, error) {
	keep := !req.Close && !p.UntilClose
	hb := HeadBufs.Get().(*[]byte)
	defer HeadBufs.Put(hb)
	out := append((*hb)[:0], p.Head[:bytes.IndexByte(p.Head, '\n')+1]...)
	for _, h := range p.Headers {
		out = append(out, p.Head[h[0]:h[1]]...)
	}
	out = append(out, extra...)
	if !keep {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	headLen := p.InReader()
	// The body bytes already read go out with the head, in one write.
	var body int64
	if p.ContentLength >= 0 && int64(bc.BR.Buffered()-headLen) >= p.ContentLength && p.ContentLength <= 16<<10 {
		b, _ := bc.BR.Peek(headLen + int(p.ContentLength))
		out = append(out, b[headLen:]...)
		body = p.ContentLength
		bc.BR.Discard(headLen + int(p.ContentLength))
		*hb = out
		_, err := c.Write(out)
		return keep, body, err
	}
	bc.BR.Discard(headLen)
	*hb = out
	if _, err := c.Write(out); err != nil {
		return false, 0, err
	}
	bp := CopyBufs.Get().(*[]byte)
	defer CopyBufs.Put(bp)
	var err error
	switch {
	case p.Chunked:
		body, err = CopyChunked(c, bc.BR, *bp)
	case p.UntilClose:
		body, err = io.CopyBuffer(c, bc.BR, *bp)
		keep = false
	default:
		body, err = io.CopyBuffer(c, io.LimitReader(bc.BR, p.ContentLength), *bp)
		if err == nil && body < p.ContentLength {
			err = io.ErrUnexpectedEOF
		}
	}
	return keep, body, err
}

// CopyChunked copies a chunked body as is, up to and including its last
// chunk and trailers, and returns the data bytes.
func CopyChunked(w io.Writer, br *bufio.Reader, buf []byte) (int64, error) {
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

// Token says b is a token (a method, a header name).
func Token(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// tokenChars are the bytes of a token (RFC 9110 5.6.2).
var tokenChars = func() (t [256]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`()<>@,;:\"/[]?={}`, c)
	}
	return t
}()

// containsFold says b contains the lower-case s, in any case.
func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if EqualFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}

// trimOWS trims the spaces and tabs around a header value.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// EqualFold compares ASCII case-insensitively without allocating.
func EqualFold(b []byte, s string) bool {
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

// PathOf is the request target without its query (which may hold secrets).
func PathOf(target []byte) string {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	return string(target)
}

// ConnSet tracks the fast path's client connections so that a shutdown
// can end the idle ones (a request in flight finishes first).
type ConnSet struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing atomic.Bool
}

func (s *ConnSet) Add(c net.Conn) bool {
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

// Len is the number of connections on the fast path now.
func (s *ConnSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *ConnSet) Remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeIdle wakes every connection waiting for a request; they see the
// flag and close.
func (s *ConnSet) CloseIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
}

// PrefixConn replays bytes already read from a connection (a peeked TLS
// ClientHello) before reading on.
type PrefixConn struct {
	net.Conn
	Prefix []byte
}

func (c *PrefixConn) Read(p []byte) (int, error) {
	if len(c.Prefix) > 0 {
		n := copy(p, c.Prefix)
		c.Prefix = c.Prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Inner is the wrapped connection once the prefix has been read (nil
// before): a tunnel can then copy with the kernel's splice, which works
// only between the system's own connection types.
func (c *PrefixConn) Inner() net.Conn {
	if len(c.Prefix) > 0 {
		return nil
	}
	return c.Conn
}

func (c *PrefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ConnQueue is a listener fed with connections accepted elsewhere.
type ConnQueue struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func NewConnQueue(addr net.Addr) *ConnQueue {
	return &ConnQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// HandOff gives c to the queue's server with the bytes br has read from
// it and not consumed yet (the request being handed off, and any after).
func (q *ConnQueue) HandOff(c net.Conn, br *bufio.Reader) {
	pending, _ := br.Peek(br.Buffered())
	c.SetReadDeadline(time.Time{}) // the server sets its own
	q.Push(&PrefixConn{Conn: c, Prefix: append([]byte(nil), pending...)})
}

func (q *ConnQueue) Push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *ConnQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *ConnQueue) Close() error {
	q.closed.Do(func() { close(q.done) })
	return nil
}

func (q *ConnQueue) Addr() net.Addr { return q.addr }

// Chunks follows a chunked body through the bytes that carry it, as they
// come, without changing them (a proxy relays them as they are): Scan
// says how many bytes of b belong to the body and whether it ended
// there, with its last chunk and trailers.
type Chunks struct {
	state  uint8
	left   int64 // data and its CRLF still to come
	size   int64 // the chunk size read so far
	line   int   // the current line's length so far
	digits bool  // the size line has had a hex digit
	after  bool  // size line: past the digits; trailer line: not empty
	ext    bool  // size line: in an extension
	Data   int64 // data bytes so far
}

const (
	inSizeLine = iota
	inData
	inTrailers
)

// ErrBadChunk is a chunked body that does not frame.
var ErrBadChunk = errors.New("bad chunked framing from the app")

// maxChunkLine bounds a size line (with extensions) or a trailer line.
const maxChunkLine = 64 << 10

func (k *Chunks) Scan(b []byte) (int, bool, error) {
	i := 0
	for i < len(b) {
		if k.state == inData {
			m := int(min(int64(len(b)-i), k.left))
			i += m
			if k.left -= int64(m); k.left == 0 {
				k.state, k.line, k.size, k.digits, k.after, k.ext = inSizeLine, 0, 0, false, false, false
			}
			continue
		}
		c := b[i]
		i++
		if k.line++; k.line > maxChunkLine {
			return i, false, ErrBadChunk
		}
		if k.state == inTrailers { // after: the line has more than a CR
			switch c {
			case '\n':
				if !k.after {
					return i, true, nil // the empty line: the end
				}
				k.line, k.after = 0, false
			case '\r':
			default:
				k.after = true
			}
			continue
		}
		switch {
		case c == '\n':
			if !k.digits {
				return i, false, ErrBadChunk
			}
			if k.size == 0 {
				k.state, k.line, k.after = inTrailers, 0, false
				continue
			}
			k.state, k.left = inData, k.size+2
			k.Data += k.size
		case k.ext:
			// an extension's name and value: passed through
		case c == ';' || c == ' ' || c == '\t' || c == '\r':
			if !k.digits {
				return i, false, ErrBadChunk
			}
			k.after, k.ext = true, c == ';'
		case k.after:
			return i, false, ErrBadChunk // "5 5"
		default:
			v, ok := hexValue(c)
			if !ok || k.size > 1<<40 {
				return i, false, ErrBadChunk
			}
			k.size, k.digits = k.size*16+int64(v), true
		}
	}
	return i, false, nil
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
