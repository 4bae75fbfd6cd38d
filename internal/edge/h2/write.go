package h2

import (
	"runtime"
	"sync"

	"golang.org/x/net/http2"
)

// Frames are appended to c.out with c.mu held; the writer goroutine sends
// what gathered while it was writing in one write.

var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() []byte { return (*outBufs.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if b != nil && cap(b) <= 4*outMax {
		b = b[:0]
		outBufs.Put(&b)
	}
}

// frameHeader appends a frame header for a payload of n bytes.
func (c *conn) frameHeader(n int, t http2.FrameType, flags http2.Flags, id uint32) {
	if c.out == nil {
		c.out = getBuf()
	}
	c.out = append(c.out, byte(n>>16), byte(n>>8), byte(n), byte(t), byte(flags), byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// kick starts the writer if there is something to send, or closes the
// connection if it is to close and everything has been sent.
func (c *conn) kick() {
	if c.writing {
		return
	}
	if len(c.out) > 0 && c.werr == nil {
		c.writing = true
		go c.writeLoop()
		return
	}
	if c.closing {
		c.werr = errConnClosed
		c.nc.Close()
	}
}

// kickControl is kick after a frame the reader answers a client's with:
// a client that sends them without reading the answers (a PING or
// SETTINGS flood) is cut rather than buffered for.
func (c *conn) kickControl() error {
	c.kick()
	if len(c.out) > 2*outMax {
		return errFlood
	}
	return nil
}

func (c *conn) writeLoop() {
	// Streams whose answers are ready (their handlers runnable, the
	// loops' turns) add their frames first: one write for all of them.
	runtime.Gosched()
	c.mu.Lock()
	for len(c.out) > 0 && c.werr == nil {
		buf := c.out
		c.out, c.spare = c.spare, nil
		if c.waiters > 0 {
			c.wakeAll() // room again
		}
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0] // (only the writer takes or sets it)
		if err != nil {
			c.werr = err
			c.wakeAll()
		}
	}
	c.writing = false
	if c.closing || c.werr != nil {
		c.werr = errConnClosed
		c.nc.Close()
	}
	if len(c.streams) == 0 { // quiet: hold no buffers
		if len(c.out) == 0 {
			putBuf(c.out)
			c.out = nil
		}
		putBuf(c.spare)
		c.spare = nil
	}
	c.flushed.Broadcast()
	c.mu.Unlock()
}

func (c *conn) writeSettings() {
	set := []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: c.s.maxStreams()},
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeader},
		{ID: http2.SettingEnableConnectProtocol, Val: 1},
	}
	c.frameHeader(6*len(set), http2.FrameSettings, 0, 0)
	for _, s := range set {
		c.out = append(c.out, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
}

func (c *conn) writeWindowUpdate(id, n uint32) {
	c.frameHeader(4, http2.FrameWindowUpdate, 0, id)
	c.out = append(c.out, byte(n>>24)&0x7f, byte(n>>16), byte(n>>8), byte(n))
}

func (c *conn) writeGoAway(code http2.ErrCode) {
	c.goAway = true
	if c.werr != nil {
		return
	}
	id := c.maxID
	c.frameHeader(8, http2.FrameGoAway, 0, 0)
	c.out = append(c.out, byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id), byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

// writeHeaderBlock sends the block in c.hbuf as a HEADERS frame and the
// CONTINUATION frames it needs.
func (c *conn) writeHeaderBlock(id uint32, end bool) {
	block := c.hbuf.Bytes()
	t := http2.FrameHeaders
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), c.maxFrame)
		var flags http2.Flags
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		if first && end {
			flags |= http2.FlagHeadersEndStream
		}
		c.frameHeader(n, t, flags, id)
		c.out = append(c.out, block[:n]...)
		block = block[n:]
		t = http2.FrameContinuation
	}
	c.hbuf.Reset()
}

// writeData appends one DATA frame.
func (c *conn) writeData(id uint32, p []byte, end bool) {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	c.frameHeader(len(p), http2.FrameData, flags, id)
	c.out = append(c.out, p...)
}
