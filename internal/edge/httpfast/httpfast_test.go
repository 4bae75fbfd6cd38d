package httpfast

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/http/httpguts"
)

func parse(t *testing.T, head string, proxy bool) (*Request, error) {
	t.Helper()
	var q Request
	err := q.Parse(bufio.NewReader(strings.NewReader(head)), proxy)
	return &q, err
}

func TestParseForwardProxy(t *testing.T) {
	for _, c := range []struct{ head, authority, target string }{
		{"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com", "/a?b=1"},
		{"GET HTTP://Example.com:8080 HTTP/1.1\r\n\r\n", "Example.com:8080", "/"},
		{"POST http://[2001:db8::1]:81/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "[2001:db8::1]:81", "/x"},
	} {
		q, err := parse(t, c.head, true)
		if err != nil || string(q.Authority) != c.authority || string(q.Target) != c.target {
			t.Errorf("%q: authority %q target %q err %v", c.head, q.Authority, q.Target, err)
		}
	}
	// Host and Proxy-Authorization are not forwarded by a forward proxy.
	q, err := parse(t, "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nProxy-Authorization: Basic x\r\nAccept: */*\r\n\r\n", true)
	if err != nil || len(q.Headers) != 1 || !strings.HasPrefix(string(q.Head[q.Headers[0][0]:]), "Accept:") {
		t.Errorf("forwarded headers: %v %v", q.Headers, err)
	}
	for _, head := range []string{
		"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
		"GET https://a.example/ HTTP/1.1\r\n\r\n",
		"GET /origin-form HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://user:pw@a.example/ HTTP/1.1\r\n\r\n",
		"GET http:/// HTTP/1.1\r\n\r\n",
		"GET http://a.example?x HTTP/1.1\r\n\r\n",
		"GET http://a.example/ HTTP/1.0\r\n\r\n",
		"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		if _, err := parse(t, head, true); err != ErrHandOff {
			t.Errorf("%q: %v; want a hand-off", head, err)
		}
	}
	// The reverse proxy's form is unchanged: origin-form and Host needed.
	if _, err := parse(t, "GET http://a.example/ HTTP/1.1\r\nHost: a\r\n\r\n", false); err != ErrHandOff {
		t.Errorf("absolute URL on the reverse proxy: %v", err)
	}
	if _, err := parse(t, "GET / HTTP/1.1\r\n\r\n", false); err != ErrHandOff {
		t.Errorf("no Host on the reverse proxy: %v", err)
	}
	if q, err := parse(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false); err != nil || len(q.Headers) != 1 {
		t.Errorf("reverse proxy forwards Host: %v %v", q.Headers, err)
	}
}

// A response head larger than the reader is gathered apart, to the byte:
// whatever the read sizes, the terminator may straddle two reads, and the
// body stays in the reader.
func TestLargeResponseHead(t *testing.T) {
	for _, size := range []int{BufSize - 10, BufSize - 1, BufSize, BufSize + 1, BufSize + 3, 3*BufSize + 2, 100 << 10} {
		for _, oneByte := range []bool{false, true} {
			head := "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Pad: "
			head += strings.Repeat("p", max(size-len(head)-4, 1)) + "\r\n\r\n"
			var src io.Reader = strings.NewReader(head + "body")
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			br := bufio.NewReaderSize(src, BufSize)
			var resp Response
			if err := resp.ReadHead(br, &Request{}, 0, nil); err != nil {
				t.Fatalf("size %d: %v", len(head), err)
			}
			if string(resp.Head) != head || resp.ContentLength != 4 {
				t.Fatalf("size %d (one byte reads %v): head of %d bytes, length %d", len(head), oneByte, len(resp.Head), resp.ContentLength)
			}
			br.Discard(resp.InReader()) // as the caller does
			if rest, _ := io.ReadAll(io.LimitReader(br, 10)); string(rest) != "body" {
				t.Fatalf("size %d: body %q", len(head), rest)
			}
			if got := resp.InReader(); len(head) > BufSize && got != 0 || len(head) < BufSize && got != len(head) {
				t.Fatalf("size %d: %d bytes said to be in the reader", len(head), got)
			}
		}
	}
}

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	sets []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.sets = append(c.sets, t)
	return nil
}

func TestDeadlineMovesOnlyWhenItMust(t *testing.T) {
	c := &deadlineConn{}
	var dl Deadline
	const idle, header = 8 * time.Second, 400 * time.Millisecond
	before := time.Now()
	dl.Within(c, idle)
	if len(c.sets) != 1 || c.sets[0].Before(before.Add(idle)) || c.sets[0].After(time.Now().Add(idle+idle/8)) {
		t.Fatalf("first Within(%v): deadlines set %v", idle, c.sets)
	}
	for range 100 { // a busy connection: the deadline stays
		dl.Within(c, idle)
	}
	if len(c.sets) != 1 {
		t.Fatalf("the deadline moved %d times while it was within [d, d+d/8]", len(c.sets)-1)
	}
	// A shorter bound (the rest of a request head) brings it forward.
	dl.Within(c, header)
	if len(c.sets) != 2 || c.sets[1].After(time.Now().Add(header+header/8)) {
		t.Fatalf("Within(%v) after Within(%v): %v", header, idle, c.sets)
	}
	dl.Within(c, idle) // and the idle wait pushes it back out
	if len(c.sets) != 3 || c.sets[2].Before(time.Now().Add(idle-time.Second)) {
		t.Fatalf("Within(%v) after Within(%v): %v", idle, header, c.sets)
	}
	// Once time has eaten into the window, it moves again.
	dl.by = time.Now().Add(idle - time.Millisecond)
	dl.Within(c, idle)
	if len(c.sets) != 4 || c.sets[3].Before(time.Now().Add(idle)) {
		t.Fatalf("a deadline closer than d was kept: %v", c.sets)
	}
	dl.None(c)
	dl.None(c)
	if len(c.sets) != 5 || !c.sets[4].IsZero() {
		t.Fatalf("None: %v", c.sets)
	}
	dl.Within(c, 0)
	if len(c.sets) != 5 {
		t.Fatalf("Within(0) with no deadline set one: %v", c.sets)
	}
}

func TestResponseStatusLineAndValues(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 200 OK": 200, "HTTP/1.1 999 x": 999, "HTTP/1.0 404 Not Found": 404, "HTTP/1.1 101 Switching": 101,
		"HTTP/1.1 099 x": -1, "HTTP/1.1 +20 x": -1, "HTTP/1.1 2x0 x": -1, "HTTP/1.1 -12 x": -1, "HTTP/1.1 20 OK": -1,
		"HTTP/2.0 200 OK": -1, "HTTP/1.1  200 x": -1,
	} {
		var p Response
		err := p.Parse([]byte(line+"\r\nContent-Length: \t 5 \t\r\nX-A:b\r\n\r\n"), &Request{})
		switch {
		case want < 0 && err == nil:
			t.Errorf("%q: parsed as %d; want an error", line, p.Status)
		case want > 0 && (err != nil || p.Status != want):
			t.Errorf("%q: %d, %v; want %d", line, p.Status, err, want)
		case want > 0 && want != 101 && p.ContentLength != 5 && want >= 200:
			t.Errorf("%q: Content-Length %d; want 5 (spaces and tabs around the value trimmed)", line, p.ContentLength)
		}
	}
}

func TestResponseConnectionClose(t *testing.T) {
	for value, reusable := range map[string]bool{"keep-alive": true, "Keep-Alive, CLOSE": false, "close": false, "Clos": true, "": true} {
		var p Response
		if err := p.Parse([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: "+value+"\r\n\r\n"), &Request{}); err != nil {
			t.Fatal(err)
		}
		if p.Reusable != reusable {
			t.Errorf("Connection: %q: reusable %v; want %v", value, p.Reusable, reusable)
		}
	}
}

// ParseBuffered does not read: a head not yet all in the buffer is
// ErrIncomplete, and Parse then waits for the rest.
func TestParseBufferedDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	br := bufio.NewReader(pr)
	go io.WriteString(pw, "GET / HTTP/1.1\r\nHost: a\r\n")
	br.Peek(1)
	for br.Buffered() < len("GET / HTTP/1.1\r\nHost: a\r\n") {
		br.Peek(br.Buffered() + 1)
	}
	var q Request
	if err := q.ParseBuffered(br, false); err != ErrIncomplete {
		t.Fatalf("an unfinished head: %v; want ErrIncomplete", err)
	}
	go io.WriteString(pw, "\r\n")
	if err := q.Parse(br, false); err != nil || string(q.Host) != "a" {
		t.Fatalf("Parse after the rest came: %v, host %q", err, q.Host)
	}
	var again Request
	if err := again.ParseBuffered(br, false); err != nil {
		t.Fatalf("a whole head in the buffer: %v", err)
	}
}

// Chunks finds the end of a chunked body however its bytes are split,
// and refuses what does not frame.
func TestChunksFindTheEnd(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		data       int64
	}{
		{"plain", "5\r\nhello\r\n0\r\n\r\n", 5},
		{"bare-lf", "5\nhello\r\n0\n\n", 5},
		{"extensions", "5;name=value\r\nhello\r\n3 ; x\r\nabc\r\n0;last\r\n\r\n", 8},
		{"trailers", "2\r\nok\r\n0\r\nDigest: abc\r\nX-A: 1\r\n\r\n", 2},
		{"hex", "1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\n\r\n", 26},
		{"data-like-an-end", "5\r\n0\r\n\r\n\r\n0\r\n\r\n", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full := tc.body + "NEXT"
			for split := 1; split <= len(full); split++ {
				var k Chunks
				at, done := 0, false
				for at < len(full) && !done {
					end := min(at+split, len(full))
					n, d, err := k.Scan([]byte(full[at:end]))
					if err != nil {
						t.Fatalf("split %d: %v", split, err)
					}
					at, done = at+n, d
				}
				if !done || at != len(tc.body) || k.Data != tc.data {
					t.Fatalf("split %d: done %v at %d, data %d; want the end at %d, data %d", split, done, at, k.Data, len(tc.body), tc.data)
				}
			}
		})
	}
	for _, bad := range []string{"\r\n", "zz\r\n", "-1\r\n", ";x\r\n", "ffffffffffffffffff\r\n"} {
		var k Chunks
		if _, _, err := k.Scan([]byte(bad)); err != ErrBadChunk {
			t.Errorf("%q: %v; want ErrBadChunk", bad, err)
		}
	}
}

// Token agrees with x/net's httpguts on every byte.
func TestTokenAgreesWithHTTPGuts(t *testing.T) {
	for c := range 256 {
		b := []byte{'a', byte(c), 'z'}
		if got, want := Token(b), httpguts.ValidHeaderFieldName(string(b)); got != want {
			t.Errorf("Token(%q) = %v; httpguts says %v", b, got, want)
		}
	}
	if Token(nil) {
		t.Error("an empty token")
	}
}
