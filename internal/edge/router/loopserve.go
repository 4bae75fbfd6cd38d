package router

import (
	"bytes"
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// What an event loop does with a request: read it from its client, send
// it to a gear, read the response and write it back, or hand the client
// (or the whole exchange) to a goroutine of the fast path (loop.go).

// serveClient reads the client's next request and sends it to a gear,
// or hands the client to a goroutine.
func (l *eventLoop) serveClient(c *loopConn) {
	if c.peer != nil || c.dialing {
		return // its answer first; what it sent meanwhile waits
	}
	r := l.r
	if c.br == nil || c.br.Buffered() == 0 {
		if !c.readable {
			c.giveBack()
			return
		}
		c.borrow()
		if _, err := c.br.Peek(1); err != nil {
			if err == errWouldBlock {
				c.readable = false
				c.giveBack()
				return
			}
			l.closeConn(c)
			return
		}
	}
	for {
		c.req = httpfast.Request{Headers: c.req.Headers[:0], FromProxy: c.req.FromProxy[:0]}
		err := c.req.ParseBuffered(c.br, false)
		if err != httpfast.ErrIncomplete {
			if err != nil {
				l.handClient(c) // net/http's
				return
			}
			break
		}
		if c.br.Buffered() >= httpfast.BufSize {
			l.handClient(c) // a large head: net/http's
			return
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			if err != errWouldBlock {
				l.closeConn(c)
				return
			}
			c.readable = false
			if !c.partial { // the rest must come within the header timeout
				c.partial = true
				l.setDue(c, l.clock()+int64(r.o.HeaderTimeout))
			}
			return
		}
	}
	c.partial = false
	if r.fastConns.Closing() {
		l.closeConn(c)
		return
	}
	if string(c.req.Host) != c.rawHost { // a client keeps to one host, mostly
		c.rawHost = string(c.req.Host)
		c.host = hostOnly(c.rawHost)
	}
	if !r.takesFast(&c.req, c.host, false) || c.req.Upgrade != nil {
		l.handClient(c)
		return
	}
	f := flight{start: time.Now()}
	f.rt, f.ep, f.cnt = r.pick(c.host)
	if f.ep == "" {
		l.handClient(c)
		return
	}
	f.st = f.rt.stats
	f.st.begin()
	f.entry = r.fastEntry(f.st, &c.req, c.remote)
	c.f = f
	if g := l.takeGear(f.ep); g != nil {
		l.send(c, g)
		return
	}
	c.dialing = true
	l.setDue(c, 0) // the dial has its own timeout
	l.dials.Add(1)
	go l.dial(c, f.ep, f.rt, 1)
}

// dial connects to the gear ep for c's request (in a goroutine of its
// own: a dial may wait) and sends the request. A gear that refuses is
// marked down and another one tried, as proxyFast does.
func (l *eventLoop) dial(c *loopConn, ep string, rt *Route, tries int) {
	defer l.dials.Done()
	bc, err := l.r.dialBackend(ep, rt)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = l.clock()
	c.dialing = false
	if c.fd < 0 { // closed meanwhile (the router stops)
		if err == nil {
			bc.Drop()
		}
		return
	}
	if err != nil {
		if tries < 3 && l.r.pickAnother(&c.f, c.host) {
			c.dialing = true
			l.dials.Add(1)
			go l.dial(c, c.f.ep, c.f.rt, tries+1)
			return
		}
		l.fail(c, err)
		return
	}
	g := l.gearConn(bc, ep)
	if g == nil {
		l.fail(c, errUnwatched)
		return
	}
	l.send(c, g)
}

// send writes c's request to the gear g: the head with the body bytes at
// hand in one write, the rest of the body as the client sends it
// (upload).
func (l *eventLoop) send(c *loopConn, g *loopConn) {
	head := len(c.req.Head)
	atHand := min(int(c.req.ContentLength), c.br.Buffered()-head)
	hb := httpfast.HeadBufs.Get().(*[]byte)
	defer httpfast.HeadBufs.Put(hb)
	out := l.r.requestHead((*hb)[:0], &c.req, c.clientIP, "http", c.trusted)
	b, _ := c.br.Peek(head + atHand)
	out = append(out, b[head:]...)
	*hb = out
	n, err := rawWrite(g.fd, out)
	if n <= 0 && err != unix.EAGAIN {
		// A pooled connection the gear closed: a goroutine tries anew,
		// from the request's bytes, none of them consumed.
		l.closeConn(g)
		c.f.land()
		l.handClient(c)
		return
	}
	c.peer, g.peer = g, c
	n = max(n, 0)
	left := c.req.ContentLength - int64(atHand)
	if n == len(out) && left == 0 {
		c.sent = head + atHand // consumed once the response comes
		l.awaitResponse(c, c.f.start)
		return
	}
	c.br.Discard(head + atHand)
	c.sent = 0
	bp := httpfast.CopyBufs.Get().(*[]byte)
	c.up = upload{buf: bp, out: append((*bp)[:0], out[n:]...), left: left}
	l.setDue(c, 0) // a body may take its time, as on the goroutines' path
	l.upload(c)
}

// awaitResponse gives the gear the app's read timeout, from the time
// the request went, to begin its response.
func (l *eventLoop) awaitResponse(c *loopConn, sent time.Time) {
	due := int64(0)
	if rt := c.f.rt.ReadTimeout; rt > 0 {
		due = int64(sent.Sub(l.epoch) + rt)
	}
	l.setDue(c, due)
}

// upload moves c's request body on to its gear: what the gear has not
// taken is written, then more is read from the client, until the gear's
// socket is full (EPOLLOUT brings it back), the client has sent all it
// has for now (its next event), or the body is through; then the gear's
// response is awaited.
func (l *eventLoop) upload(c *loopConn) {
	g, up := c.peer, &c.up
	for {
		if done, err := flush(g.fd, &up.out); err != nil {
			l.endUpload(c)
			l.closeConn(g)
			l.fail(c, err)
			return
		} else if !done {
			up.stalled = true
			return
		}
		if up.left == 0 {
			l.endUpload(c)
			l.awaitResponse(c, time.Now())
			if g.readable {
				l.gearReady(g) // it may have answered meanwhile
			}
			return
		}
		if !c.readable {
			return // its next bytes bring it back
		}
		n, err := c.read((*up.buf)[:min(int64(len(*up.buf)), up.left)])
		if err == unix.EAGAIN {
			return
		}
		if n <= 0 {
			l.endUpload(c)
			l.closeConn(g)
			l.fail(c, errors.New("the client went away in the middle of the request body"))
			return
		}
		up.left -= int64(n)
		up.out = (*up.buf)[:n]
	}
}

// flush writes out to fd until it is all written (true), the socket is
// full (false: EPOLLOUT says when it has room), or a write fails.
func flush(fd int, out *[]byte) (bool, error) {
	for len(*out) > 0 {
		n, err := rawWrite(fd, *out)
		if err == unix.EAGAIN {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		*out = (*out)[n:]
	}
	return true, nil
}

func (l *eventLoop) endUpload(c *loopConn) {
	httpfast.CopyBufs.Put(c.up.buf)
	c.up = upload{}
}

// gearReady reads a gear's response and sends it to its client.
func (l *eventLoop) gearReady(g *loopConn) {
	if g.x != nil {
		l.h2Ready(g)
		return
	}
	c := g.peer
	if c == nil {
		// Idle in the pool: the event may be one for bytes already read
		// with the last response; anything more (or the end) drops it.
		var b [1]byte
		if _, _, err := unix.Recvfrom(g.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); err != unix.EAGAIN {
			l.dropGear(g)
		}
		return
	}
	if c.up.buf != nil {
		return // its request body first: the response is read after
	}
	if c.resp.buf != nil { // its body, on its way
		if !c.resp.stalled {
			l.relay(c)
		}
		return
	}
	head, err := g.responseHead()
	switch {
	case err == errWouldBlock:
		return
	case err == errLongHead:
		l.handExchange(c, g)
		return
	case err != nil:
		started := g.br.Buffered() > 0
		l.closeConn(g)
		if !started && c.req.ContentLength == 0 {
			// A pooled connection the gear closed before answering: a
			// goroutine tries a new one.
			c.f.land()
			c.peer = nil
			l.handClient(c)
			return
		}
		l.fail(c, err)
		return
	}
	var resp httpfast.Response
	if err := resp.Parse(head, &c.req); err != nil {
		l.closeConn(g)
		l.fail(c, err)
		return
	}
	if resp.Status < 200 {
		l.closeConn(g)
		l.fail(c, errors.New("informational responses are not expected here"))
		return
	}
	if resp.UntilClose {
		l.handExchange(c, g) // a body until the end: rare, and no reuse
		return
	}
	// The head goes out with the body bytes that came with it; the rest
	// of the body follows as it comes (relay).
	l.setDue(c, 0) // the body may take its time
	bp := httpfast.CopyBufs.Get().(*[]byte)
	out := append((*bp)[:0], head[:bytes.IndexByte(head, '\n')+1]...)
	for _, h := range resp.Headers {
		out = append(out, head[h[0]:h[1]]...)
	}
	c.keep = !c.req.Close && !l.closing
	if !c.keep {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	c.resp = response{buf: bp, left: resp.ContentLength, chunked: resp.Chunked, status: resp.Status, reusable: resp.Reusable}
	b, _ := g.br.Peek(g.br.Buffered())
	n, err := c.resp.take(b[len(head):])
	out = append(out, b[len(head):len(head)+n]...)
	g.br.Discard(len(head) + n)
	c.resp.out = out
	c.br.Discard(c.sent) // the request, kept until now for a retry
	c.sent = 0
	if err != nil {
		l.cut(c)
		return
	}
	l.relay(c)
}

var errLongHead = errors.New("a response head longer than the reader")

// responseHead reads the gear's response head into g's reader: the head
// (still in it), or errWouldBlock (the rest is to come: the socket is
// empty), errLongHead (it does not fit: a goroutine gathers it) or the
// read's error.
func (g *loopConn) responseHead() ([]byte, error) {
	g.borrow()
	for {
		buf, _ := g.br.Peek(g.br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+4], nil
		}
		if g.br.Buffered() >= httpfast.BufSize {
			return nil, errLongHead
		}
		if _, err := g.br.Peek(g.br.Buffered() + 1); err != nil {
			if err == errWouldBlock {
				g.readable = false
			}
			return nil, err
		}
	}
}

// take says how many bytes of b, read from the gear, belong to the body
// (what follows it makes the connection unfit for another request).
func (rs *response) take(b []byte) (int, error) {
	n := len(b)
	if rs.chunked {
		var err error
		if n, rs.ended, err = rs.chunks.Scan(b); err != nil {
			return 0, err
		}
	} else {
		n = int(min(int64(n), rs.left))
		rs.left -= int64(n)
		rs.sent += int64(n)
		rs.ended = rs.left == 0
	}
	if n < len(b) {
		rs.reusable = false
	}
	return n, nil
}

// relay moves c's response on: what the client has not taken is written,
// then the body is read on from the gear, until the client's socket is
// full (EPOLLOUT brings it back), the gear has sent all it has for now
// (its next event), or the response is through.
func (l *eventLoop) relay(c *loopConn) {
	g, rs := c.peer, &c.resp
	for {
		if done, err := flush(c.fd, &rs.out); err != nil {
			l.cut(c)
			return
		} else if !done {
			rs.stalled = true
			return
		}
		if rs.ended {
			l.delivered(c)
			return
		}
		g.giveBack() // the body read with the head went out with it
		want := len(*rs.buf)
		if !rs.chunked {
			want = int(min(int64(want), rs.left))
		}
		if !g.readable {
			return // its next bytes bring it back
		}
		n, err := g.read((*rs.buf)[:want])
		if err == unix.EAGAIN {
			return
		}
		if n <= 0 {
			l.cut(c) // the gear ended the body early
			return
		}
		if n, err = rs.take((*rs.buf)[:n]); err != nil {
			l.cut(c)
			return
		}
		rs.out = (*rs.buf)[:n]
	}
}

// delivered ends c's request: recorded, the gear pooled, the client on
// to its next request.
func (l *eventLoop) delivered(c *loopConn) {
	g, reusable := c.peer, c.resp.reusable
	l.land(c)
	if reusable && (g.br == nil || g.br.Buffered() == 0) {
		l.putGear(g)
	} else {
		l.closeConn(g)
	}
	if !c.keep {
		l.closeConn(c)
		return
	}
	l.idle(c)
	l.serveClient(c) // a request sent meanwhile
}

// cut ends a response that cannot be finished (the client or the gear
// went away in the middle): both connections close, as the goroutines'
// path does.
func (l *eventLoop) cut(c *loopConn) {
	g := c.peer
	l.land(c)
	l.closeConn(g)
	l.closeConn(c)
}

// land records c's request with what went of its response and ends its
// flight; c and its gear are apart again.
func (l *eventLoop) land(c *loopConn) {
	g, rs := c.peer, c.resp
	c.resp = response{}
	httpfast.CopyBufs.Put(rs.buf)
	c.peer, g.peer = nil, nil
	l.r.obs.recordEntry(c.f.st, c.f.entry, c.f.start, rs.status, c.req.ContentLength, rs.bodyBytes(), c.f.ep)
	c.f.land()
}

// idle gives c the idle timeout to send its next request, from the
// batch's clock plus a sixteenth (the batch took less), so never sooner.
func (l *eventLoop) idle(c *loopConn) {
	d := int64(l.r.o.IdleTimeout)
	l.setDue(c, l.now+d+d/16)
}

// fail answers c's request in flight with the page for err, and closes c.
func (l *eventLoop) fail(c *loopConn, err error) {
	c.peer = nil
	status, title, msg := l.r.gearFailed(err, c.host, &c.f)
	page, body := rawPage(status, title, msg)
	unix.Write(c.fd, page)
	l.r.obs.recordEntry(c.f.st, c.f.entry, c.f.start, status, 0, int64(body), "")
	c.f.land()
	l.closeConn(c)
}

// takeGear is a pooled connection to ep: the loop's own, or one of the
// goroutines' pool; nil if there is none.
func (l *eventLoop) takeGear(ep string) *loopConn {
	if list := l.gears[ep]; len(list) > 0 {
		g := list[len(list)-1]
		l.gears[ep] = list[:len(list)-1]
		g.due = 0 // its pool time ends
		return g
	}
	bc := l.r.pool.Get(ep)
	if bc == nil {
		return nil
	}
	if bc.BR.Buffered() > 0 {
		bc.Drop()
		return nil
	}
	return l.gearConn(bc, ep)
}

var errUnwatched = errors.New("the router could not watch its connection to the app")

// gearConn moves bc, a connection to the gear ep with nothing unread, into
// the loop (nil if it could not: bc is dropped).
func (l *eventLoop) gearConn(bc *httpfast.Conn, ep string) *loopConn {
	g := l.detach(bc.Conn, true, ep)
	if g == nil {
		bc.Drop()
		return nil
	}
	bc.BR.Reset(nil)
	httpfast.Readers.Put(bc.BR)
	return g
}

// lend takes an idle connection to ep from a loop's pool for a goroutine
// of the fast path (nil: none), so that the loops and the goroutines
// share their connections to a gear.
func (ls loops) lend(ep string) *httpfast.Conn {
	for _, l := range ls {
		l.mu.Lock()
		var nc net.Conn
		if list := l.gears[ep]; len(list) > 0 {
			g := list[len(list)-1]
			l.gears[ep] = list[:len(list)-1]
			nc = l.release(g)
		}
		l.mu.Unlock()
		if nc != nil {
			return httpfast.NewConn(nc)
		}
	}
	return nil
}

// putGear pools g, idle for as long as the goroutines' pool keeps one.
func (l *eventLoop) putGear(g *loopConn) {
	g.giveBack()
	if len(l.gears[g.ep]) >= httpfast.PoolMaxPerHost || l.closing {
		l.closeConn(g)
		return
	}
	l.gears[g.ep] = append(l.gears[g.ep], g)
	l.setDue(g, l.now+int64(httpfast.PoolIdleTimeout))
}

func (l *eventLoop) dropGear(g *loopConn) {
	list := l.gears[g.ep]
	for i, x := range list {
		if x == g {
			copy(list[i:], list[i+1:])
			l.gears[g.ep] = list[:len(list)-1]
			break
		}
	}
	l.closeConn(g)
}

// handClient gives the client to a goroutine of the fast path, which
// serves its next requests.
func (l *eventLoop) handClient(c *loopConn) {
	nc := l.release(c)
	if nc == nil {
		return
	}
	go l.r.serveFastOn(nc, l.q, false, l.r.o.IdleTimeout)
}

// handExchange gives a request in flight to a goroutine (finishFast),
// which reads the gear's response on and sends it.
func (l *eventLoop) handExchange(c, g *loopConn) {
	c.peer, g.peer = nil, nil
	c.br.Discard(c.sent) // the request, kept until now for a retry
	c.sent = 0
	req := httpfast.Request{IsHead: c.req.IsHead, Close: c.req.Close || l.closing, ContentLength: c.req.ContentLength}
	host, f := c.host, c.f
	gc := l.release(g)
	cc := l.release(c)
	if gc == nil || cc == nil {
		if gc != nil {
			gc.Close()
		}
		if cc != nil {
			cc.Close()
		}
		f.land()
		return
	}
	go l.r.finishFast(cc, gc, req, host, f, l.q)
}
