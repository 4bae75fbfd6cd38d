package router

import (
	"bufio"
	"container/heap"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gantry-paas/gantry/internal/edge/httpfast"
)

// The event loops serve the plain fast path's keep-alive connections
// once their first request is through: a goroutine per core waits on an
// epoll instance of its own for all the connections it holds, reads a
// request when its client sends one, writes it to a gear connection from
// its own pool (or one it dials, in a goroutine of the dial's own) with
// its body as the client sends it, and relays the response back as it
// comes (a socket found full is written again when epoll says it has
// room). No goroutine per connection is parked and woken for each
// request, and no read returns EAGAIN: the loop reads a socket when
// epoll says it has bytes (bench/router, HTTP/1.1 keep-alive: CPU per
// request -10 to -15%; 16-64 KiB responses -45%).
//
// What a loop does not do itself it hands at once, with the bytes it has
// read, to a goroutine of the fast path (serveFastOn, finishFast): a
// request serveFast would hand to net/http or not take, a response until
// the end or with a head longer than a reader, a pooled connection the
// gear closed before answering (the goroutine tries a new one). The
// loops' connections are raw descriptors taken out of Go's poller (a
// connection in both would wake both), and given back as net.Conns when
// handed.
//
// Each loop's state (connections, gear pool, timers) is under its mutex,
// held while it works through a batch of events (its sockets never block)
// and never across a wait.

var errWouldBlock = errors.New("would block")

// Read reads c's socket for its bufio.Reader: errWouldBlock when it is
// empty.
func (c *loopConn) Read(p []byte) (int, error) {
	if !c.readable {
		return 0, errWouldBlock
	}
	n, err := c.read(p)
	switch {
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// loopConn is a client or gear connection of a loop.
type loopConn struct {
	fd       int           // -1 once closed or handed
	br       *bufio.Reader // from httpfast.Readers while bytes are pending
	readable bool          // epoll said so, and it has not been read empty since
	hup      bool          // epoll said the other end closed or failed
	gear     bool
	peer     *loopConn // the other end of a request in flight
	// a client's
	remote, clientIP string
	trusted          bool
	partial          bool // a request head has begun and not ended
	dialing          bool // its request waits for a new gear connection (dial)
	req              httpfast.Request
	rawHost, host    string // its last Host header, and the host in it
	f                flight
	keep             bool     // the connection stays open after this response
	sent             int      // bytes of the request in br sent whole, consumed with the response
	up               upload   // the request body on its way (buf nil: none)
	resp             response // the response on its way (buf nil: none)
	// a gear's
	ep   string
	used time.Time
	x    *h2Exchange // the HTTP/2 request in flight on it (loopH2.go)
	// due is when the present wait ends (on the loop's clock; 0: never);
	// queued is the timer entry standing for it.
	due, queued int64
}

// read reads c's socket. A read that finds it empty clears readable, and
// so does one that returns less than asked (it took all there was:
// epoll, edge-triggered, reports the next bytes), unless the other end
// has closed (its EOF is reported once, and is still to be read).
func (c *loopConn) read(p []byte) (int, error) {
	n, err := rawRead(c.fd, p)
	if err == unix.EAGAIN || err == nil && n < len(p) && !c.hup {
		c.readable = false
	}
	return n, err
}

func (c *loopConn) borrow() {
	if c.br == nil {
		c.br = httpfast.Readers.Get().(*bufio.Reader)
		c.br.Reset(c)
	}
}

// giveBack returns the reader if nothing is pending in it.
func (c *loopConn) giveBack() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		httpfast.Readers.Put(c.br)
		c.br = nil
	}
}

// response is a client's response on its way from the gear: out (in
// buf, from httpfast.CopyBufs) is what the client has not taken yet;
// the body is framed by its length (left: what the gear has still to
// send) or by chunks.
type response struct {
	buf      *[]byte
	out      []byte
	left     int64
	chunked  bool
	chunks   httpfast.Chunks
	ended    bool // the gear has sent the whole body
	sent     int64
	status   int
	reusable bool // the gear's connection serves another request after
	stalled  bool // the client's socket was full: EPOLLOUT resumes
}

// upload is a request body on its way to the gear: out (in buf, from
// httpfast.CopyBufs) is what the gear has not taken yet, left what the
// client has still to send.
type upload struct {
	buf     *[]byte
	out     []byte
	left    int64
	stalled bool // the gear's socket was full: EPOLLOUT resumes
}

// bodyBytes is how much of the body went through, for the log.
func (rs *response) bodyBytes() int64 {
	if rs.chunked {
		return rs.chunks.Data
	}
	return rs.sent
}

type timer struct {
	at int64
	c  *loopConn
}

type timers []timer

func (t timers) Len() int { return len(t) }

func (t timers) Less(i, j int) bool { return t[i].at < t[j].at }

func (t timers) Swap(i, j int) { t[i], t[j] = t[j], t[i] }

func (t *timers) Push(x any) { *t = append(*t, x.(timer)) }

func (t *timers) Pop() any {
	old := *t
	x := old[len(old)-1]
	*t = old[:len(old)-1]
	return x
}

// eventLoop is one loop: its epoll instance is in Go's poller (the loop
// goroutine parks on it when there is nothing to do), with an eventfd
// that wakes it.
type eventLoop struct {
	r       *Router
	q       *httpfast.ConnQueue
	epfd    int
	ep      *os.File
	raw     syscall.RawConn
	wakeFD  int
	mu      sync.Mutex
	conns   map[int32]*loopConn
	clients int
	gears   map[string][]*loopConn
	timers  timers
	parked  bool          // waiting, until wakeAt (0: no timer)
	wakeAt  int64         //
	epoch   time.Time     // the loop's clock counts from here (monotonic)
	now     int64         // when the batch of events began, on that clock (ns)
	rr      atomic.Uint32 // the next loop to adopt a connection (the first loop's)
	closing bool
	done    chan struct{}
	dials   sync.WaitGroup // its dials in flight (each in a goroutine)
}

// loops are a router's event loops (nil: none, every connection stays
// on its goroutine).
type loops []*eventLoop

// startLoops starts one loop per core for the HTTP port; none if epoll
// fails.
func (r *Router) startLoops(q *httpfast.ConnQueue) loops {
	var ls loops
	for range runtime.GOMAXPROCS(0) {
		l, err := newEventLoop(r, q)
		if err != nil {
			r.log.Warn("HTTP keep-alive connections stay on goroutines", "err", err)
			ls.stop()
			ls.wait(context.Background())
			return nil
		}
		ls = append(ls, l)
	}
	return ls
}

func newEventLoop(r *Router, q *httpfast.ConnQueue) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev)
	unix.SetNonblock(epfd, true) // os.NewFile puts it in Go's poller
	f := os.NewFile(uintptr(epfd), "epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(wfd)
		return nil, err
	}
	l := &eventLoop{r: r, q: q, epfd: epfd, ep: f, raw: raw, wakeFD: wfd, epoch: time.Now(),
		conns: map[int32]*loopConn{}, gears: map[string][]*loopConn{}, done: make(chan struct{})}
	go l.run()
	return l, nil
}

// adopt moves c, a plain connection between requests with nothing
// unread, into a loop; false: it stays with the caller.
func (ls loops) adopt(c net.Conn, remote, clientIP string, trusted bool) bool {
	if len(ls) == 0 {
		return false
	}
	l := ls[int(ls[0].rr.Add(1))%len(ls)]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	lc := l.detach(c, false, "")
	if lc == nil {
		return false
	}
	lc.remote, lc.clientIP, lc.trusted = remote, clientIP, trusted
	l.now = l.clock()
	l.idle(lc)
	return true
}

// detach moves c's socket from Go's poller to l: a duplicate of its
// descriptor registered with l (as a client, or a gear to ep), then c
// closed (the socket lives on in the duplicate). Nil: c is not a TCP
// connection with nothing left to replay, or l could not take it; c is
// left as it was. Under l.mu.
func (l *eventLoop) detach(c net.Conn, gear bool, ep string) *loopConn {
	if pc, ok := c.(*httpfast.PrefixConn); ok {
		if c = pc.Inner(); c == nil {
			return nil
		}
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	raw.Control(func(orig uintptr) {
		fd, _ = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	})
	if fd < 0 {
		return nil
	}
	// Edge-triggered: an event says bytes came (or the end), and the
	// socket is then read until it is empty.
	// Room to write is watched as well: with EPOLLET that is one event
	// after a write found the socket full.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return nil
	}
	tc.Close()
	lc := &loopConn{fd: fd, gear: gear, ep: ep}
	l.conns[int32(fd)] = lc
	if !gear {
		l.clients++
	}
	return lc
}

// clock is the loop's time: nanoseconds since its start, monotonic.
func (l *eventLoop) clock() int64 { return int64(time.Since(l.epoch)) }

func (l *eventLoop) wake() {
	unix.Write(l.wakeFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// setDue sets when c's present wait ends (under l.mu). A timer entry
// already due sooner stays and, when it comes, queues the later one.
func (l *eventLoop) setDue(c *loopConn, at int64) {
	c.due = at
	if at == 0 || c.queued != 0 && c.queued <= at {
		return
	}
	heap.Push(&l.timers, timer{at, c})
	c.queued = at
	if l.parked && (l.wakeAt == 0 || at < l.wakeAt) {
		l.wake()
	}
}

func (l *eventLoop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, 128)
	var deadline int64 // set on the poller's file
	for {
		n, _ := unix.EpollWait(l.epfd, events, 0)
		if n <= 0 {
			l.mu.Lock()
			if l.closing && l.clients == 0 {
				l.mu.Unlock()
				l.shut()
				return
			}
			l.parked, l.wakeAt = true, 0
			if len(l.timers) > 0 {
				l.wakeAt = l.timers[0].at
			}
			at := l.wakeAt
			l.mu.Unlock()
			if at != deadline {
				var t time.Time
				if at != 0 {
					t = l.epoch.Add(time.Duration(at))
				}
				l.ep.SetReadDeadline(t)
				deadline = at
			}
			n = 0
			// Read calls the function, and again each time Go's poller
			// says the epoll instance has events, until one is there
			// (or the deadline passes: set again at the next wait).
			if l.raw.Read(func(fd uintptr) bool {
				n, _ = unix.EpollWait(int(fd), events, 0)
				return n > 0
			}) != nil {
				deadline = -1
			}
		}
		l.mu.Lock()
		l.parked = false
		l.now = l.clock()
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == l.wakeFD {
				var b [8]byte
				unix.Read(l.wakeFD, b[:])
				continue
			}
			c := l.conns[ev.Fd]
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.hup = true
			}
			if c.gear {
				if p := c.peer; ev.Events&unix.EPOLLOUT != 0 && p != nil && p.up.stalled {
					p.up.stalled = false
					l.upload(p)
				}
				if ev.Events&^unix.EPOLLOUT != 0 && c.fd >= 0 {
					c.readable = true
					l.gearReady(c)
				}
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 && c.resp.stalled {
				c.resp.stalled = false
				l.relay(c)
			}
			if ev.Events&^unix.EPOLLOUT != 0 && c.fd >= 0 {
				c.readable = true
				switch {
				case c.up.buf == nil:
					l.serveClient(c)
				case !c.up.stalled:
					l.upload(c)
				}
			}
		}
		if len(l.timers) > 0 {
			l.expire(l.now)
		}
		if l.closing {
			l.closeIdle()
		}
		l.mu.Unlock()
	}
}

// expire ends the waits due by now.
func (l *eventLoop) expire(now int64) {
	for len(l.timers) > 0 && l.timers[0].at <= now {
		t := heap.Pop(&l.timers).(timer)
		c := t.c
		if c.fd < 0 || t.at != c.queued {
			continue // closed, or a later entry stands for it
		}
		c.queued = 0
		switch {
		case c.due == 0:
		case c.due > now:
			heap.Push(&l.timers, timer{c.due, c})
			c.queued = c.due
		case c.gear && c.x != nil:
			l.h2Expired(c)
		case c.gear:
			if c.peer == nil {
				l.dropGear(c) // idle in the pool past its time
			}
		case c.peer != nil:
			g := c.peer
			l.closeConn(g)
			l.fail(c, errReadTimeout)
		default:
			l.closeConn(c) // idle, or a head that did not end in time
		}
	}
}

func (l *eventLoop) forget(c *loopConn) {
	if c.br != nil {
		c.br.Reset(nil)
		httpfast.Readers.Put(c.br)
		c.br = nil
	}
	delete(l.conns, int32(c.fd))
	if !c.gear {
		l.clients--
	}
}

func (l *eventLoop) closeConn(c *loopConn) {
	if c.fd < 0 {
		return
	}
	l.forget(c)
	unix.Close(c.fd) // the only descriptor: epoll forgets it too
	c.fd = -1
}

// release takes c out of the loop as a net.Conn that first replays the
// bytes c read and did not consume (nil if that fails: c is closed).
func (l *eventLoop) release(c *loopConn) net.Conn {
	var pending []byte
	if c.br != nil {
		b, _ := c.br.Peek(c.br.Buffered())
		pending = append(pending, b...)
	}
	fd := c.fd
	l.forget(c)
	c.fd = -1
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil) // the socket lives on in the net.Conn
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil
	}
	if len(pending) > 0 {
		return &httpfast.PrefixConn{Conn: nc, Prefix: pending}
	}
	return nc
}

// closeIdle closes the clients not waiting for a response, and the
// pool (under l.mu, once closing).
func (l *eventLoop) closeIdle() {
	for _, c := range l.conns {
		if c.peer == nil && !c.dialing && c.x == nil {
			if c.gear {
				l.dropGear(c)
			} else {
				l.closeConn(c)
			}
		}
	}
}

// shut closes what is left and the loop's own descriptors.
func (l *eventLoop) shut() {
	l.mu.Lock()
	for _, c := range l.conns {
		if (c.peer != nil || c.dialing) && !c.gear {
			c.f.land()
		}
		if x := c.x; x != nil { // (cut: the drain timeout passed)
			c.x = nil
			go l.r.h2Answer(x, nil, nil, errors.New("the router stopped"))
		}
		l.closeConn(c)
	}
	l.gears = nil
	l.mu.Unlock()
	l.ep.Close()
	unix.Close(l.wakeFD)
}

// stop makes the loops close their idle clients now and the others
// after their response, then end.
func (ls loops) stop() {
	for _, l := range ls {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		l.wake()
	}
}

// wait waits for the loops to end, until ctx ends: then the requests
// still in flight are cut.
func (ls loops) wait(ctx context.Context) {
	for _, l := range ls {
		select {
		case <-l.done:
		case <-ctx.Done():
			l.mu.Lock()
			l.clients = 0 // the loop ends at its next turn
			l.mu.Unlock()
			l.wake()
			<-l.done
		}
		l.dials.Wait() // each ends within the dial timeout
	}
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket,
// which never waits: without telling Go's scheduler of a system call
// (bench/router: CPU per request -2 to -3%).
func rawRead(fd int, p []byte) (int, error) { return rawIO(unix.SYS_READ, fd, p) }

func rawWrite(fd int, p []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, p) }

func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
