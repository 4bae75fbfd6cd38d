package router

import (
	"errors"

	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// HTTP/2 requests of the fast path on the event loops: the h2 reader
// goroutine writes the request on a gear connection of a loop's pool
// (takeH2), the loop reads the answer when epoll says it came (h2Ready),
// and a whole answer the client's windows take goes into the h2
// connection's buffer from there (h2.Stream.TrySend): no goroutine is
// started, parked or woken for the request. Anything else — a body still
// coming or larger than the windows, chunks, a long head, a pooled
// connection the gear closed — goes on a goroutine (h2Finish,
// exchangeH2, h2Answer), as without loops.

// takeH2 gives x to a loop; false: none takes it (they are stopping).
func (ls loops) takeH2(x *h2Exchange) bool {
	l := ls[int(ls[0].rr.Add(1))%len(ls)]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.now = l.clock()
	l.clients++ // (the loop runs until it is answered)
	if g := l.takeGear(x.f.ep); g != nil {
		l.sendH2(x, g)
		return true
	}
	l.dials.Add(1)
	go l.dialH2(x, 1)
	return true
}

// dialH2 connects to x's gear (on a goroutine: a dial may wait) and sends
// the request; a gear that refuses is marked down and another tried.
func (l *eventLoop) dialH2(x *h2Exchange, tries int) {
	defer l.dials.Done()
	bc, err := l.r.dialBackend(x.f.ep, x.f.rt)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = l.clock()
	if err != nil {
		if tries < 3 && l.r.pickAnother(&x.f, x.host) {
			l.dials.Add(1)
			go l.dialH2(x, tries+1)
			return
		}
		l.h2Off(x, err)
		return
	}
	g := l.gearConn(bc, x.f.ep)
	if g == nil {
		l.h2Off(x, errUnwatched)
		return
	}
	l.sendH2(x, g)
}

// h2Off takes x off the loop and ends it with the page for err (under
// l.mu; the page is written on a goroutine: it may wait for window).
func (l *eventLoop) h2Off(x *h2Exchange, err error) {
	l.clients--
	go l.r.h2Answer(x, nil, nil, err)
}

// sendH2 writes x's request to g and awaits the answer.
func (l *eventLoop) sendH2(x *h2Exchange, g *loopConn) {
	head := *x.hb
	n, err := rawWrite(g.fd, head)
	switch {
	case n == len(head):
		g.x = x
		due := int64(0)
		if rt := x.f.rt.ReadTimeout; rt > 0 {
			due = l.now + int64(rt)
		}
		l.setDue(g, due)
	case n <= 0 && err != unix.EAGAIN:
		// A pooled connection the gear closed: a goroutine tries anew.
		l.closeConn(g)
		l.clients--
		go l.r.exchangeH2(x)
	default: // the socket took part of it: the rest from a goroutine
		l.clients--
		gc := l.release(g)
		if gc == nil {
			go l.r.h2Answer(x, nil, nil, errors.New("the router lost its connection to the app"))
			return
		}
		go func() {
			if _, err := gc.Write(head[max(n, 0):]); err != nil {
				gc.Close()
				l.r.h2Answer(x, nil, nil, err)
				return
			}
			l.r.h2Finish(x, gc)
		}()
	}
}

// h2Ready reads the answer to the request in flight on g.
func (l *eventLoop) h2Ready(g *loopConn) {
	x := g.x
	head, err := g.responseHead()
	switch {
	case err == errWouldBlock:
		return
	case err == errLongHead:
		l.handH2(g)
		return
	case err != nil:
		started := g.br.Buffered() > 0
		g.x = nil
		l.closeConn(g)
		l.clients--
		if !started { // a pooled connection the gear closed: anew
			go l.r.exchangeH2(x)
			return
		}
		go l.r.h2Answer(x, nil, nil, err)
		return
	}
	var resp httpfast.Response
	if err := resp.Parse(head, &httpfast.Request{IsHead: x.isHead}); err != nil || resp.Status < 200 {
		l.handH2(g) // h2Finish parses it again and says what is wrong
		return
	}
	whole := !resp.Chunked && !resp.UntilClose && int64(g.br.Buffered()-len(head)) >= resp.ContentLength
	if !whole {
		l.handH2(g)
		return
	}
	b, _ := g.br.Peek(len(head) + int(resp.ContentLength))
	fp := h2Fields.Get().(*[]hpack.HeaderField)
	fields := l.r.h2Header((*fp)[:0], &resp)
	sent, err := x.s.TrySend(resp.Status, fields, b[len(head):])
	*fp = fields[:0]
	h2Fields.Put(fp)
	if !sent && err == nil {
		l.handH2(g) // more than the client's windows take now
		return
	}
	g.br.Discard(len(b))
	g.x = nil
	l.clients--
	l.r.h2Looped.Add(1)
	n := resp.ContentLength
	if err != nil {
		n = 0 // the client reset the stream, or left
	}
	l.r.obs.recordEntry(x.f.st, x.f.entry, x.f.start, resp.Status, 0, n, x.f.ep)
	x.f.land()
	x.freeHead()
	if resp.Reusable && g.br.Buffered() == 0 {
		l.putGear(g)
	} else {
		l.closeConn(g)
	}
}

// handH2 gives the exchange on g to a goroutine (h2Finish), which reads
// the answer from the start.
func (l *eventLoop) handH2(g *loopConn) {
	x := g.x
	g.x = nil
	l.clients--
	gc := l.release(g)
	if gc == nil {
		go l.r.h2Answer(x, nil, nil, errors.New("the router lost its connection to the app"))
		return
	}
	go l.r.h2Finish(x, gc)
}

// h2Expired ends an exchange whose gear did not begin its answer within
// the app's read timeout.
func (l *eventLoop) h2Expired(g *loopConn) {
	x := g.x
	g.x = nil
	l.closeConn(g)
	l.h2Off(x, errReadTimeout)
}
