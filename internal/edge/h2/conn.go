package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var (
	errConnClosed   = errors.New("http2: connection closed")
	errStreamClosed = errors.New("http2: stream closed")
	errClientReset  = errors.New("http2: stream reset by the client")
	errFlood        = errors.New("http2: the client sends frames faster than it reads the answers")
)

// conn is one HTTP/2 connection.
type conn struct {
	s      *Server
	nc     net.Conn
	tls    *tls.ConnectionState
	remote string
	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	// The reader goroutine's own.
	br          io.Reader // the connection, or a bufio.Reader over it
	fr          *http2.Framer
	hd          *blockDecoder
	maxHeader   uint32
	sawSettings bool
	resets      int
	resetsSince time.Time

	handlers sync.WaitGroup

	mu       sync.Mutex
	streams  map[uint32]*stream
	running  int    // handlers still running (a reset stream's may)
	maxID    uint32 // the highest stream the client opened
	sendWin  int64  // the connection's window for the server's DATA
	initWin  int64  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame int    // the client's SETTINGS_MAX_FRAME_SIZE
	recvWin  int64  // what the client may still send on the connection
	consumed int64  // request bytes read or dropped, not yet given back
	enc      *hpack.Encoder
	hbuf     bytes.Buffer // the HPACK encoder's output
	out      []byte       // frames to send
	spare    []byte       // the writer's other buffer
	writing  bool         // the writer goroutine runs
	werr     error        // set once nothing more can be sent
	closing  bool         // close the connection once out is sent
	goAway   bool         // a GOAWAY was sent: no new streams
	idle     *time.Timer
	flushed  sync.Cond // the writer stopped
	waiters  int       // streams waiting for window or room
}

// serve reads and handles frames until the connection ends.
func (c *conn) serve() {
	c.flushed.L = &c.mu
	defer c.teardown()
	var pre [len(http2.ClientPreface)]byte
	c.mu.Lock()
	c.startIdle()
	c.mu.Unlock()
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return
	}
	c.mu.Lock()
	c.writeSettings()
	c.writeWindowUpdate(0, connWindow-65535)
	c.kick()
	c.mu.Unlock()
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.process(f)
		}
		if err != nil && !c.handle(err) {
			return
		}
	}
}

// handle answers an error of reading or handling a frame; it says
// whether to read on.
func (c *conn) handle(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		c.resetStream(se.StreamID, se.Code)
		c.mu.Unlock()
		return true
	case errors.As(err, &ce):
		c.fail(http2.ErrCode(ce))
	case err == http2.ErrFrameTooLarge:
		c.fail(http2.ErrCodeFrameSize)
	case err == errFlood:
		c.s.logf("HTTP/2 connection cut", "client", c.remote, "err", err)
	}
	return false
}

// fail ends the connection with a GOAWAY saying why.
func (c *conn) fail(code http2.ErrCode) {
	c.mu.Lock()
	c.writeGoAway(code)
	c.closing = true
	c.kick()
	c.mu.Unlock()
}

// goAwayGracefully tells the client to open no more streams; the
// connection closes when its streams have ended.
func (c *conn) goAwayGracefully() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.goAway {
		c.writeGoAway(http2.ErrCodeNo)
	}
	if len(c.streams) == 0 {
		c.closing = true
	}
	c.kick()
}

// teardown sends what is queued (for at most a second), closes the
// connection, ends its streams and waits for their handlers.
func (c *conn) teardown() {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.mu.Lock()
	c.closing = true
	c.kick()
	for c.writing {
		c.flushed.Wait()
	}
	if c.werr == nil {
		c.werr = errConnClosed
	}
	for _, st := range c.streams {
		st.remoteDone, st.localDone = true, true
		c.closeStream(st, errConnClosed)
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	c.nc.Close()
	c.cancel()
	c.handlers.Wait()
	c.mu.Lock()
	putBuf(c.out)
	putBuf(c.spare)
	c.out, c.spare = nil, nil
	c.mu.Unlock()
}

// startIdle arms the idle timeout (c.mu held, no streams).
func (c *conn) startIdle() {
	if c.s.IdleTimeout <= 0 {
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(c.s.IdleTimeout, c.goAwayGracefully)
		return
	}
	c.idle.Reset(c.s.IdleTimeout)
}

// process handles a frame read.
func (c *conn) process(f http2.Frame) error {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.HeadersFrame:
		c.hd.begin(f, c.maxHeader)
		return c.headerBlock(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.ContinuationFrame: // (the framer checks their order)
		return c.headerBlock(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		return c.processPing(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	case *http2.GoAwayFrame:
		c.goAwayGracefully()
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY, PRIORITY_UPDATE and unknown frames: nothing to do
}

// headerBlock decodes a fragment of a header block, and takes the block
// when it ends.
func (c *conn) headerBlock(frag []byte, ended bool) error {
	done, err := c.hd.write(frag, ended)
	if err != nil || !done {
		return err
	}
	return c.processHeaders(&c.hd.block)
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.initWin
			c.initWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			if delta > 0 {
				c.wakeAll()
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.frameHeader(0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	return c.kickControl()
}

func (c *conn) processPing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.StreamID != 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frameHeader(8, http2.FramePing, http2.FlagPingAck, 0)
	c.out = append(c.out, f.Data[:]...)
	return c.kickControl()
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.wakeAll()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle
		}
		return nil // closed
	}
	st.sendWin += int64(f.Increment)
	if st.sendWin > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	if st.waiting {
		st.cond.Signal()
	}
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	if lim := c.s.ResetLimit; lim > 0 {
		if now := time.Now(); now.Sub(c.resetsSince) > time.Second {
			c.resetsSince, c.resets = now, 0
		}
		if c.resets++; c.resets > lim {
			if c.s.OnAbuse != nil {
				c.s.OnAbuse(c.nc)
			}
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID > c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle
	}
	if st := c.streams[f.StreamID]; st != nil {
		st.remoteDone, st.localDone = true, true
		c.closeStream(st, errClientReset)
	}
	return nil
}

func (c *conn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if id > c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle
	}
	if c.recvWin -= n; c.recvWin < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	st := c.streams[id]
	if st == nil || st.remoteDone {
		c.giveBack(n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if st.recvWin -= n; st.recvWin < 0 {
		c.giveBack(n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	data := f.Data()
	st.got += int64(len(data))
	if st.declLen >= 0 && st.got > st.declLen {
		c.giveBack(n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if pad := n - int64(len(data)); pad > 0 {
		c.giveBack(pad)
		st.giveBack(pad)
	}
	if st.bodyGone {
		c.giveBack(int64(len(data)))
		st.giveBack(int64(len(data)))
	} else if len(data) > 0 {
		st.body = append(st.body, data...)
		st.cond.Signal()
	}
	if f.StreamEnded() {
		return c.endRemote(st)
	}
	return nil
}

// endRemote takes the client's END_STREAM (c.mu held).
func (c *conn) endRemote(st *stream) error {
	if st.declLen >= 0 && st.got != st.declLen {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	st.remoteDone = true
	if st.bodyErr == nil {
		st.bodyErr = io.EOF
	}
	st.cond.Broadcast()
	if st.localDone {
		c.closeStream(st, nil)
	}
	return nil
}

// giveBack returns n bytes of the connection's window to the client once
// enough have gathered (c.mu held).
func (c *conn) giveBack(n int64) {
	c.consumed += n
	if c.consumed >= connWindow/2 && c.werr == nil {
		c.writeWindowUpdate(0, uint32(c.consumed))
		c.recvWin += c.consumed
		c.consumed = 0
		c.kick()
	}
}

// resetStream sends RST_STREAM and ends the stream (c.mu held).
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	if c.werr == nil {
		c.frameHeader(4, http2.FrameRSTStream, 0, id)
		c.out = append(c.out, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
		c.kick()
	}
	if st := c.streams[id]; st != nil {
		st.remoteDone, st.localDone = true, true
		c.closeStream(st, errStreamClosed)
	}
}

// closeStream forgets a stream both sides are done with, or that was
// reset (c.mu held): its handler's reads and writes fail from now on.
func (c *conn) closeStream(st *stream, err error) {
	if st.closed {
		return
	}
	st.closed = true
	delete(c.streams, st.id)
	if err != nil {
		if st.bodyErr == nil || st.bodyErr == io.EOF && !st.remoteDone {
			st.bodyErr = err
		}
		if st.err == nil {
			st.err = err
		}
	}
	if unread := int64(len(st.body) - st.off); unread > 0 {
		c.giveBack(unread)
	}
	st.body, st.off = nil, 0
	st.bodyGone = true
	st.stopTimers()
	if st.cancel != nil {
		st.cancel()
	}
	st.cond.Broadcast()
	if len(c.streams) == 0 {
		if c.goAway {
			c.closing = true
			c.kick()
		} else {
			c.startIdle()
		}
	}
}

// wakeAll wakes the streams waiting to send (c.mu held).
func (c *conn) wakeAll() {
	if c.waiters == 0 {
		return
	}
	for _, st := range c.streams {
		if st.waiting {
			st.cond.Signal()
		}
	}
}
