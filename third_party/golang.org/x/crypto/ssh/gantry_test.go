// Tests of Gantry's patch to this package (third_party/README.md in the
// Gantry repository): one write per AES-GCM packet, and incoming channel
// data without a copy or an allocation per packet.

package ssh

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// A packet is written with one Write, length and tag included, and reads
// back as it was.
func TestGCMWritesAPacketAtOnce(t *testing.T) {
	algs := DirectionAlgorithms{Cipher: CipherAES128GCM, compression: compressionNone}
	kr := &kexResult{Hash: crypto.SHA256}
	w, err := newPacketCipher(clientKeys, algs, kr)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newPacketCipher(clientKeys, algs, kr)
	for i, size := range []int{1, 100, 5000, channelMaxPacket + 9, 300, maxPacket - 100} {
		packet := bytes.Repeat([]byte{byte(i + 1)}, size)
		var out countingWriter
		if err := w.writeCipherPacket(uint32(i), &out, rand.Reader, packet); err != nil {
			t.Fatal(err)
		}
		if out.writes != 1 {
			t.Errorf("a packet of %d bytes: %d writes, want 1", size, out.writes)
		}
		if length := binary.BigEndian.Uint32(out.Bytes()); int(length)+4+gcmTagSize != out.Len() {
			t.Errorf("a packet of %d bytes: %d written, length field %d", size, out.Len(), length)
		}
		got, err := r.readCipherPacket(uint32(i), &out)
		if err != nil || !bytes.Equal(got, packet) {
			t.Fatalf("a packet of %d bytes read back: %d bytes, %v", size, len(got), err)
		}
	}
}

// Bulk data through a channel is read without an allocation per packet,
// and comes out intact however it is read (in large or small reads, or
// written on by WriteTo to a writer or a socket): packet buffers go back
// to the pool only once all of their data is out.
func TestChannelDataIsNotCopiedPerPacket(t *testing.T) {
	const total = 64 << 20
	for _, how := range []string{"reads of 256 KiB", "reads of 1000 bytes", "WriteTo a writer", "WriteTo a socket"} {
		t.Run(how, func(t *testing.T) {
			client := bulkPair(t, total, 64<<10)
			ch, reqs, err := client.OpenChannel("bulk", nil)
			if err != nil {
				t.Fatal(err)
			}
			go DiscardRequests(reqs)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			check := &bulkChecker{t: t}
			switch how {
			case "reads of 256 KiB":
				_, err = io.CopyBuffer(struct{ io.Writer }{check}, struct{ io.Reader }{ch}, make([]byte, 256<<10))
			case "reads of 1000 bytes":
				_, err = io.CopyBuffer(struct{ io.Writer }{check}, struct{ io.Reader }{ch}, make([]byte, 1000))
			case "WriteTo a writer":
				_, err = io.Copy(check, ch)
			case "WriteTo a socket":
				a, b, perr := netPipe()
				if perr != nil {
					t.Fatal(perr)
				}
				defer a.Close()
				done := make(chan error)
				go func() {
					_, err := io.Copy(struct{ io.Writer }{check}, struct{ io.Reader }{b})
					b.Close()
					done <- err
				}()
				_, err = io.Copy(a, ch)
				a.Close()
				if derr := <-done; err == nil {
					err = derr
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			if check.n != total {
				t.Fatalf("read %d bytes, want %d", check.n, total)
			}
			// Upstream copies each packet into a new allocation: total
			// bytes. The rest of the connection allocates far less, but
			// reads of 1000 bytes send a window adjustment for each few,
			// and the collections those make empty the pool now and then.
			if alloc := after.TotalAlloc - before.TotalAlloc; !raceEnabled && how != "reads of 1000 bytes" && alloc > total/8 {
				t.Errorf("%d MiB allocated to read %d MiB", alloc>>20, total>>20)
			}
		})
	}
}

// A channel nobody reads holds its window's worth of data: in small
// packets, not one pool buffer each (a peer sending 4 KiB packets would
// make a window take nine times its size).
func TestUnreadSmallPacketsTakeTheirSize(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	client := bulkPair(t, 64<<20, 4096)
	nc, reqs, err := client.OpenChannel("bulk", nil)
	if err != nil {
		t.Fatal(err)
	}
	go DiscardRequests(reqs)
	ch := nc.(*channel)
	for buffered(ch.pending) < channelWindowSize {
		time.Sleep(10 * time.Millisecond) // until the window is full
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 3*channelWindowSize {
		t.Errorf("a full window of 4 KiB packets holds %d KiB (window %d KiB)", held>>10, channelWindowSize>>10)
	}
}

// buffered is how many bytes b holds unread.
func buffered(b *buffer) int {
	b.Cond.L.Lock()
	defer b.Cond.L.Unlock()
	n := 0
	for e := b.head; e != nil; e = e.next {
		n += len(e.buf)
	}
	return n
}

// bulkChecker checks that each byte is its offset's 32 KiB block number
// plus its offset (as bulkPair writes them): a buffer reused too early
// shows.
type bulkChecker struct {
	t *testing.T
	n int64
}

func (c *bulkChecker) Write(p []byte) (int, error) {
	for i, b := range p {
		off := c.n + int64(i)
		if b != byte(off>>15+off) {
			return 0, fmt.Errorf("byte %d is %d, want %d", off, b, byte(off>>15+off))
		}
	}
	c.n += int64(len(p))
	return len(p), nil
}

// bulkPair connects a client to a server over TCP with AES-GCM; the
// server answers a "bulk" channel with total bytes (see bulkChecker),
// written chunk bytes at a time.
func bulkPair(t *testing.T, total, chunk int) *Client {
	c1, c2, err := netPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	conf := &ServerConfig{NoClientAuth: true, Config: Config{Ciphers: []string{CipherAES128GCM}}}
	conf.AddHostKey(testSigners["ecdsa"])
	go func() {
		_, chans, reqs, err := NewServerConn(c1, conf)
		if err != nil {
			return
		}
		go DiscardRequests(reqs)
		for nc := range chans {
			ch, reqs, err := nc.Accept()
			if err != nil {
				return
			}
			go DiscardRequests(reqs)
			go func() {
				buf := make([]byte, chunk)
				for off := 0; off < total; off += len(buf) {
					for i := range buf {
						o := off + i
						buf[i] = byte(o>>15 + o)
					}
					if _, err := ch.Write(buf); err != nil {
						return
					}
				}
				ch.CloseWrite()
			}()
		}
	}()
	conn, chans, reqs, err := NewClientConn(c2, "", &ClientConfig{HostKeyCallback: InsecureIgnoreHostKey(),
		Config: Config{Ciphers: []string{CipherAES128GCM}}})
	if err != nil {
		t.Fatal(err)
	}
	client := NewClient(conn, chans, reqs)
	t.Cleanup(func() { client.Close() })
	return client
}
