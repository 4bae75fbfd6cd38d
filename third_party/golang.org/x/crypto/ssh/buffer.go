// Copyright 2012 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"io"
	"net"
	"sync"
)

// buffer provides a linked list buffer for data exchange
// between producer and consumer. Theoretically the buffer is
// of unlimited capacity as it does no allocation of its own.
type buffer struct {
	// protects concurrent access to head, tail and closed
	*sync.Cond

	head *element // the buffer that will be read first
	tail *element // the buffer that will be read last

	closed bool

	batch net.Buffers // writeTo's, kept for the next (gantry patch)
}

// An element represents a single link in a linked list.
type element struct {
	buf    []byte
	packet []byte // the packet buf is in, for freePacketBuf once read (gantry patch)
	next   *element
}

// Packets of channel data are read into buffers of packetBufSize from a
// pool, given to a channel's buffer as they are, and given back once Read
// has copied all their data out: no allocation, clearing or collection
// per packet (gantry patch).
//
// A buffer comes back as the packet that was handed out, which starts a
// byte into it (after the padding length), so each trip costs it that
// byte: it serves about a thousand packets before it is too short for a
// full one, and a new one is made.
//
// Only packets of at least half a buffer are pooled: what a channel holds
// unread (its window's worth, when the reader is slow or a peer hostile)
// then takes at most twice its size, as with a copy per packet; smaller
// packets are allocated as they were.
const (
	packetBufSize   = channelMaxPacket + 1024
	minPooledPacket = packetBufSize / 2
)

var packetBufs sync.Pool

// newPacketBuf returns n bytes for an incoming packet, from the pool if
// it is of a size bulk data comes in.
func newPacketBuf(n int) []byte {
	if n < minPooledPacket || n > packetBufSize {
		return make([]byte, n)
	}
	if p, ok := packetBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n, packetBufSize)
}

// freePacketBuf gives back a packet from readPacket once nothing refers
// to it.
func freePacketBuf(packet []byte) {
	if cap(packet) < minPooledPacket || cap(packet) > packetBufSize {
		return
	}
	packet = packet[:cap(packet)]
	packetBufs.Put(&packet)
}

// newBuffer returns an empty buffer that is not closed.
func newBuffer() *buffer {
	e := new(element)
	b := &buffer{
		Cond: newCond(),
		head: e,
		tail: e,
	}
	return b
}

// write makes buf available for Read to receive.
// buf must not be modified after the call to write.
func (b *buffer) write(buf []byte) {
	b.writePacket(buf, nil)
}

// writePacket is write for data from an incoming packet: the packet
// goes to freePacketBuf once buf has been read (gantry patch).
func (b *buffer) writePacket(buf, packet []byte) {
	b.Cond.L.Lock()
	e := &element{buf: buf, packet: packet}
	b.tail.next = e
	b.tail = e
	b.Cond.Signal()
	b.Cond.L.Unlock()
}

// eof closes the buffer. Reads from the buffer once all
// the data has been consumed will receive io.EOF.
func (b *buffer) eof() {
	b.Cond.L.Lock()
	b.closed = true
	b.Cond.Signal()
	b.Cond.L.Unlock()
}

// Read reads data from the internal buffer in buf.  Reads will block
// if no data is available, or until the buffer is closed.
func (b *buffer) Read(buf []byte) (n int, err error) {
	b.Cond.L.Lock()
	defer b.Cond.L.Unlock()

	for len(buf) > 0 {
		// if there is data in b.head, copy it
		if len(b.head.buf) > 0 {
			r := copy(buf, b.head.buf)
			buf, b.head.buf = buf[r:], b.head.buf[r:]
			n += r
			continue
		}
		// if there is a next buffer, make it the head
		if len(b.head.buf) == 0 && b.head != b.tail {
			b.advance()
			continue
		}

		// if at least one byte has been copied, return
		if n > 0 {
			break
		}

		// if nothing was read, and there is nothing outstanding
		// check to see if the buffer is closed.
		if b.closed {
			err = io.EOF
			break
		}
		// out of buffers, wait for producer
		b.Cond.Wait()
	}
	return
}

// Limits of one writeTo: the elements (packets) and bytes it writes at
// once (gantry patch).
const (
	maxWriteToElements = 64
	maxWriteToBytes    = 1 << 20
)

// writeTo writes what the buffer holds to w without copying it: the
// elements there are, up to the limits above, in one net.Buffers write
// (one writev to a socket). It waits for data, and returns io.EOF once
// the buffer is closed and empty. It must not run beside Read or another
// writeTo, which could give back a packet it is writing (gantry patch).
func (b *buffer) writeTo(w io.Writer) (int64, error) {
	b.Cond.L.Lock()
	for len(b.head.buf) == 0 {
		if b.head != b.tail {
			b.advance()
			continue
		}
		if b.closed {
			b.Cond.L.Unlock()
			return 0, io.EOF
		}
		b.Cond.Wait()
	}
	bufs, size := b.batch[:0], 0
	for e := b.head; e != nil && len(bufs) < maxWriteToElements && size < maxWriteToBytes; e = e.next {
		if len(e.buf) > 0 {
			bufs = append(bufs, e.buf)
			size += len(e.buf)
		}
	}
	b.batch = bufs
	b.Cond.L.Unlock()

	written := bufs // WriteTo consumes its receiver
	n, err := written.WriteTo(w)
	clear(b.batch[:cap(b.batch)])

	b.Cond.L.Lock()
	for left := n; left > 0; {
		k := min(int64(len(b.head.buf)), left)
		b.head.buf = b.head.buf[k:]
		left -= k
		if len(b.head.buf) > 0 || b.head == b.tail {
			break
		}
		b.advance()
	}
	b.Cond.L.Unlock()
	return n, err
}

// advance moves past the head, read to its end, giving its packet back.
func (b *buffer) advance() {
	if b.head.packet != nil {
		freePacketBuf(b.head.packet)
		b.head.packet = nil
	}
	b.head = b.head.next
}
