package httpfast

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseAgainstNetHTTP: whatever the fast parser takes (rather than
// handing off), net/http.ReadRequest must take too, and read the same
// method, target, Host and body length. A request net/http refuses must
// never be forwarded by the fast path (request smuggling lives in such
// differences: Content-Length: +44 was one).
func FuzzParseAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +44\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
		"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var q Request
		if err := q.Parse(bufio.NewReader(bytes.NewReader(in)), false); err != nil {
			return // handed off or refused: net/http decides
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			t.Fatalf("the fast path takes %q, net/http refuses it: %v", in, err)
		}
		if req.Method != string(q.Method) || req.RequestURI != string(q.Target) {
			t.Fatalf("%q: fast %s %s, net/http %s %s", in, q.Method, q.Target, req.Method, req.RequestURI)
		}
		if req.Host != string(q.Host) {
			t.Fatalf("%q: fast Host %q, net/http %q", in, q.Host, req.Host)
		}
		want := req.ContentLength
		if want < 0 {
			want = 0
		}
		if want != q.ContentLength {
			t.Fatalf("%q: fast Content-Length %d, net/http %d", in, q.ContentLength, req.ContentLength)
		}
	})
}

func TestParseLength(t *testing.T) {
	for _, c := range []struct {
		in string
		n  int64
		ok bool
	}{
		{"0", 0, true}, {"44", 44, true}, {"007", 7, true}, {"+44", 0, false}, {"-0", 0, false},
		{"", 0, false}, {"0x10", 0, false}, {"1 2", 0, false}, {"1234567890123456789", 0, false},
	} {
		n, ok := ParseLength([]byte(c.in))
		if n != c.n || ok != c.ok {
			t.Errorf("ParseLength(%q) = %d, %v; want %d, %v", c.in, n, ok, c.n, c.ok)
		}
	}
}

func TestForwardedFromProxyOnly(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n"
	q, err := parse(t, head, false)
	if err != nil {
		t.Fatal(err)
	}
	var fwd, from []string
	for _, h := range q.Headers {
		fwd = append(fwd, strings.TrimSpace(string(q.Head[h[0]:h[1]])))
	}
	for _, h := range q.FromProxy {
		from = append(from, strings.TrimSpace(string(q.Head[h[0]:h[1]])))
	}
	if strings.Join(fwd, "|") != "Host: a|Accept: */*" || strings.Join(from, "|") != "Forwarded: for=6.6.6.6|X-Real-IP: 6.6.6.6" || string(q.XRealIP) != "6.6.6.6" {
		t.Errorf("forwarded %q, from a proxy only %q, X-Real-IP %q", fwd, from, q.XRealIP)
	}
}

// FuzzChunksAgainstCopyChunked: where the goroutines' path (CopyChunked)
// finds the end of a chunked body, the event loop's scanner (Chunks)
// finds it at the same byte, with the same data length, however the
// bytes are split: both paths must agree on where a response ends.
func FuzzChunksAgainstCopyChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n",
		"1a \r\n" + strings.Repeat("z", 26) + "\r\n0\r\n\r\nrest",
		"0\n\n",
		"5 5\r\nhello\r\n0\r\n\r\n",
	} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, body string, split uint8) {
		br := bufio.NewReader(strings.NewReader(body))
		data, err := CopyChunked(io.Discard, br, make([]byte, 64))
		var k Chunks
		at, done := 0, false
		step := int(split%16) + 1
		for at < len(body) && !done {
			n, d, serr := k.Scan([]byte(body[at:min(at+step, len(body))]))
			if serr != nil {
				return // refused: the loop cuts the response
			}
			at, done = at+n, d
		}
		if err != nil || !done {
			return
		}
		if end := len(body) - br.Buffered(); at != end || k.Data != data {
			t.Fatalf("%q: the scanner ends at %d with %d data bytes; CopyChunked at %d with %d", body, at, k.Data, end, data)
		}
	})
}
