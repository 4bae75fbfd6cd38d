package h2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// start serves s on a TLS listener; the client speaks h2 to it.
func start(t *testing.T, s *Server) (base string, client *http.Client) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := c.(*tls.Conn)
				if tc.Handshake() == nil {
					s.ServeConn(tc)
				} else {
					c.Close()
				}
			}()
		}
	}()
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
	})
	return "https://" + ln.Addr().String(), &http.Client{Transport: tr}
}

func TestServesRequests(t *testing.T) {
	h := http.NewServeMux()
	h.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
		fmt.Fprintf(w, "hello %s %s %s", r.Method, r.Host, r.URL.RequestURI())
	})
	h.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		hash := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, hash), r.Body)
		if err != nil {
			t.Errorf("reading the body: %v", err)
		}
		w.Header().Set("X-Sum", hex.EncodeToString(hash.Sum(nil)))
		w.Header().Set(http.TrailerPrefix+"X-Len", fmt.Sprint(n))
		w.Header().Set(http.TrailerPrefix+"X-Req-Trailer", r.Trailer.Get("X-Check"))
	})
	h.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "event %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	h.HandleFunc("/early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Write([]byte("after hints"))
	})
	base, client := start(t, &Server{Handler: h})

	t.Run("get", func(t *testing.T) {
		resp, err := client.Get(base + "/hello?x=1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "hello GET " + strings.TrimPrefix(base, "https://") + " /hello?x=1"
		if string(b) != want || resp.Proto != "HTTP/2.0" || resp.Header.Get("X-Proto") != "HTTP/2.0" {
			t.Errorf("%s %q (X-Proto %q); want HTTP/2.0 %q", resp.Proto, b, resp.Header.Get("X-Proto"), want)
		}
		if resp.ContentLength != int64(len(want)) || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("Date") == "" {
			t.Errorf("Content-Length %d, Content-Type %q, Date %q; want %d, sniffed text, a date", resp.ContentLength, resp.Header.Get("Content-Type"), resp.Header.Get("Date"), len(want))
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, err := client.Head(base + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("HEAD: %d", resp.StatusCode)
		}
	})
	t.Run("no_content", func(t *testing.T) {
		resp, err := client.Get(base + "/empty")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Errorf("%d; want 204", resp.StatusCode)
		}
	})
	t.Run("big_bodies_both_ways_with_trailers", func(t *testing.T) {
		// 8 MB each way: many times both sides' windows.
		body := bytes.Repeat([]byte("0123456789abcdef"), 512<<10)
		sum := sha256.Sum256(body)
		req, _ := http.NewRequest("POST", base+"/echo", io.MultiReader(bytes.NewReader(body)) /* no length */)
		req.Trailer = http.Header{"X-Check": nil}
		req.ContentLength = -1
		req.Trailer.Set("X-Check", "sent") // read after the body
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("echoed %d bytes (%v); want the %d sent", len(got), err, len(body))
		}
		if resp.Trailer.Get("X-Sum") != hex.EncodeToString(sum[:]) || resp.Trailer.Get("X-Len") != fmt.Sprint(len(body)) || resp.Trailer.Get("X-Req-Trailer") != "sent" {
			t.Errorf("trailers %v; want the sum, the length and the request's trailer", resp.Trailer)
		}
	})
	t.Run("flushed_stream", func(t *testing.T) {
		resp, err := client.Get(base + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "event 0\nevent 1\nevent 2\n" || resp.ContentLength != -1 {
			t.Errorf("%q (length %d); want three events of unknown length", b, resp.ContentLength)
		}
	})
	t.Run("early_hints", func(t *testing.T) {
		resp, err := client.Get(base + "/early")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "after hints" {
			t.Errorf("%d %q; want 200 after the 103", resp.StatusCode, b)
		}
	})
	t.Run("concurrent_streams", func(t *testing.T) {
		var wg sync.WaitGroup
		var bad atomic.Int32
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := client.Get(fmt.Sprintf("%s/hello?i=%d", base, i))
				if err != nil {
					bad.Add(1)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.HasSuffix(string(b), fmt.Sprintf("?i=%d", i)) {
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
		if bad.Load() > 0 {
			t.Errorf("%d of 100 concurrent requests failed", bad.Load())
		}
	})
}

// rawConn is an h2 client speaking frames, for what http2.Transport
// will not do.
type rawConn struct {
	t   *testing.T
	c   *tls.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t *testing.T, base string, settings ...http2.Setting) *rawConn {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c}
	r.fr = http2.NewFramer(c, c)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.buf)
	io.WriteString(c, http2.ClientPreface)
	r.fr.WriteSettings(settings...)
	return r
}

func (r *rawConn) request(id uint32, method, path string, end bool) {
	r.t.Helper()
	if err := r.tryRequest(id, method, path, end); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) tryRequest(id uint32, method, path string, end bool) error {
	r.buf.Reset()
	for _, f := range [][2]string{{":method", method}, {":scheme", "https"}, {":authority", "localhost"}, {":path", path}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndStream: end, EndHeaders: true})
}

// until reads frames until one that pred accepts; an error or a closed
// connection fails the test.
func (r *rawConn) until(what string, pred func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if pred(f) {
			return f
		}
	}
}

// cut reads until the server ends the connection, failing the test if it
// is still open after 10 s (it outlived what): a GOAWAY it sends on the
// way must carry one of codes.
func (r *rawConn) cut(what string, codes ...http2.ErrCode) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatalf("the connection outlived %s", what)
			}
			return // closed
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok && !slices.Contains(codes, ga.ErrCode) {
			r.t.Errorf("GOAWAY %v; want %v", ga.ErrCode, codes[0])
		}
	}
}

func TestRapidResetCutsTheConnection(t *testing.T) {
	var abused atomic.Int32
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }), ResetLimit: 50, OnAbuse: func(net.Conn) { abused.Add(1) }}
	base, _ := start(t, s)
	r := dialRaw(t, base)
	for i := range 200 {
		id := uint32(2*i + 1)
		if r.tryRequest(id, "GET", "/", true) != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // cut
		}
	}
	// The connection ends, with a GOAWAY if the client reads it in time.
	r.cut("200 rapid resets", http2.ErrCodeEnhanceYourCalm)
	if abused.Load() != 1 {
		t.Errorf("OnAbuse called %d times; want once", abused.Load())
	}
	// A client resetting a few streams a second is not cut.
	r2 := dialRaw(t, base)
	for i := range 20 {
		r2.request(uint32(2*i+1), "GET", "/", true)
		r2.fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
	}
	r2.fr.WritePing(false, [8]byte{1})
	r2.until("the PING's ack", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
}

func TestReadDeadlineIsNotSticky(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var b [16]byte
		_, err := r.Body.Read(b[:])
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			got <- fmt.Sprintf("first read: %v; want a deadline error", err)
			return
		}
		rc.SetReadDeadline(time.Time{})
		w.WriteHeader(200)
		rc.Flush() // tells the client to send
		n, err := io.ReadFull(r.Body, b[:5])
		got <- fmt.Sprintf("%q %v", b[:n], err)
	})
	base, _ := start(t, &Server{Handler: h})
	r := dialRaw(t, base)
	r.request(1, "POST", "/", false)
	r.until("the response", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
	r.fr.WriteData(1, true, []byte("later"))
	if g := <-got; g != `"later" <nil>` {
		t.Error(g)
	}
}

func TestShutdownWaitsForStreams(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	s := &Server{Handler: h}
	base, _ := start(t, s)
	r := dialRaw(t, base)
	r.request(1, "GET", "/", true)
	<-started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a stream in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	d := r.until("the response", func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamEnded() }).(*http2.DataFrame)
	if string(d.Data()) != "finished" {
		t.Errorf("body %q", d.Data())
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := r.fr.ReadFrame(); err == nil {
		t.Error("the connection stayed open after its last stream")
	}
}

func TestIdleTimeout(t *testing.T) {
	base, _ := start(t, &Server{Handler: http.NotFoundHandler(), IdleTimeout: 200 * time.Millisecond})
	r := dialRaw(t, base)
	r.request(1, "GET", "/", true)
	start := time.Now()
	r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("closed after %v; want the idle timeout (200 ms) after the last stream", el)
	}
}

func TestHandlerPanicResetsTheStreamOnly(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	})
	base, client := start(t, &Server{Handler: h})
	if _, err := client.Get(base + "/panic"); err == nil {
		t.Error("a panicking handler's request succeeded")
	}
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Errorf("%q; want ok after a panic on another stream", b)
	}
}

// A client that opens a window of one byte gets its response a byte at a
// time, and the rest when it opens more.
func TestSmallClientWindow(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "abcdef") })
	base, _ := start(t, &Server{Handler: h})
	r := dialRaw(t, base, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	r.request(1, "GET", "/", true)
	d := r.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if string(d.Data()) != "a" || d.StreamEnded() {
		t.Fatalf("first DATA %q (end %v); want \"a\"", d.Data(), d.StreamEnded())
	}
	r.fr.WriteWindowUpdate(1, 10)
	var rest []byte
	for {
		d := r.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
		rest = append(rest, d.Data()...)
		if d.StreamEnded() {
			break
		}
	}
	if string(rest) != "bcdef" {
		t.Errorf("rest %q; want bcdef", rest)
	}
}

// Direct answers bodiless requests through the Stream before any
// http.Request is made; what it declines, and requests with bodies, go
// to the handler.
func TestDirect(t *testing.T) {
	var sawHandler atomic.Int32
	s := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawHandler.Add(1)
			io.WriteString(w, "handler "+r.Method)
		}),
		Direct: func(s *Stream, r *Request) bool {
			var answer func()
			switch r.Path {
			case "/direct":
				answer = func() {
					s.SendHeader(200, []hpack.HeaderField{{Name: "x-direct", Value: fieldOf(r, "x-in")}}, false)
					s.SendData([]byte("part one, "), false)
					s.SendData([]byte("part two"), false)
					s.SendTrailers([]hpack.HeaderField{{Name: "x-sum", Value: "42"}})
				}
			case "/whole":
				answer = func() {
					if ok, err := s.TrySend(200, nil, []byte("all at once")); !ok || err != nil {
						t.Errorf("TrySend: %v %v", ok, err)
					}
				}
			case "/page":
				answer = func() {
					w := s.Writer()
					w.WriteHeader(503)
					io.WriteString(w, "a page")
				}
			case "/nothing": // took it and sent nothing: a 502
				answer = func() {}
			default:
				return false
			}
			go func() { answer(); s.Finish() }() // (not on the reader's goroutine)
			return true
		},
	}
	base, client := start(t, s)
	get := func(method, path string, body io.Reader) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("X-In", "in")
		req.Header.Set("Trailer", "X-Sum")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, b := get("GET", "/direct", nil); b != "part one, part two" || resp.Header.Get("X-Direct") != "in" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("direct: %q %v %v", b, resp.Header, resp.Trailer)
	}
	if resp, b := get("GET", "/whole", nil); resp.StatusCode != 200 || b != "all at once" || resp.ContentLength != -1 && resp.ContentLength != 11 {
		t.Errorf("whole: %d %q", resp.StatusCode, b)
	}
	if resp, b := get("GET", "/page", nil); resp.StatusCode != 503 || b != "a page" {
		t.Errorf("page: %d %q", resp.StatusCode, b)
	}
	if resp, _ := get("GET", "/nothing", nil); resp.StatusCode != 502 {
		t.Errorf("nothing sent: %d; want 502", resp.StatusCode)
	}
	if sawHandler.Load() != 0 {
		t.Errorf("the handler served %d requests Direct took", sawHandler.Load())
	}
	if _, b := get("GET", "/other", nil); b != "handler GET" {
		t.Errorf("declined: %q", b)
	}
	if _, b := get("POST", "/direct", strings.NewReader("body")); b != "handler POST" {
		t.Errorf("with a body: %q", b)
	}
}

func fieldOf(r *Request, name string) string {
	for _, f := range r.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// A header list over MaxHeaderBytes is answered 431; an endless header
// block (CONTINUATION flood, CVE-2024-27316) ends the connection.
func TestHeaderListLimits(t *testing.T) {
	base, _ := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), MaxHeaderBytes: 8 << 10})
	big := dialRaw(t, base)
	big.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/"}} {
		big.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range 12 { // 12 kB in all (one frame), each under the limit
		big.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-h%d", i), Value: strings.Repeat("v", 1000)})
	}
	big.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: big.buf.Bytes(), EndStream: true, EndHeaders: true})
	h := big.until("the answer", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
	if st := h.PseudoValue("status"); st != "431" {
		t.Errorf("status %s; want 431", st)
	}

	r := dialRaw(t, base)
	r.buf.Reset()
	r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.buf.Bytes(), EndStream: true})
	junk := bytes.Repeat([]byte{0x40, 1, 'x', 1, 'y'}, 3000) // literal fields, 15 kB a frame
	var err2 error
	for i := 0; i < 2000 && err2 == nil; i++ {
		err2 = r.fr.WriteContinuation(1, false, junk)
	}
	r.cut("30 MB of CONTINUATION frames", http2.ErrCodeProtocol, http2.ErrCodeCompression)
}

// A client that sends PINGs and never reads the answers is cut once
// they are over twice the buffer's bound, not buffered for without end.
func TestPingFloodIsCut(t *testing.T) {
	base, _ := start(t, &Server{Handler: http.NotFoundHandler()})
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	c, err := tls.DialWithDialer(d, "tcp", strings.TrimPrefix(base, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for i := 0; i < 2_000_000; i++ { // 34 MB of answers, unread
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the server stopped reading instead of cutting the connection")
			}
			return // cut
		}
	}
	t.Fatal("2,000,000 unanswered PINGs and the connection is still open")
}
