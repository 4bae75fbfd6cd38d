package router

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// h2Socket is a WebSocket opened over an h2 stream (RFC 8441), spoken by
// hand: masked frames out, plain frames in.
type h2Socket struct {
	w    *io.PipeWriter
	body io.ReadCloser
}

func dialH2Socket(t *testing.T, tr *http2.Transport, url string) (*h2Socket, *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodConnect, url, pr)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("extended CONNECT: %v", err)
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return &h2Socket{w: pw, body: resp.Body}, resp
}

func (s *h2Socket) send(t *testing.T, msg string) {
	t.Helper()
	var mask [4]byte
	rand.Read(mask[:])
	f := append([]byte{0x81, 0x80 | byte(len(msg))}, mask[:]...)
	for i := range len(msg) {
		f = append(f, msg[i]^mask[i%4])
	}
	if _, err := s.w.Write(f); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (s *h2Socket) recv() (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(s.body, hdr[:]); err != nil {
		return "", err
	}
	b := make([]byte, hdr[1]&0x7f)
	_, err := io.ReadFull(s.body, b)
	return string(b), err
}

func h2Transport(r *Router, roots *x509.CertPool) *http2.Transport {
	return &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", r.TLSAddr().String())
	}}
}

func TestWebSocketOverH2(t *testing.T) {
	platform := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := websocket.Accept(w, req, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(req.Context())
			if err != nil {
				return
			}
			tls := "plain"
			if req.TLS != nil {
				tls = "tls"
			}
			c.Write(req.Context(), typ, append([]byte("platform/"+tls+":"), msg...))
		}
	})
	r, st, ca := newTLSRouter(t, func(o *Options) { o.Platform = platform })
	a := backend(t, "a", nil)
	app := blog
	app.TunnelTimeout = 400 * time.Millisecond
	put(t, st, r, []store.App{app}, map[string]string{"g1": a})
	tr := h2Transport(r, ca.Roots())
	defer tr.CloseIdleConnections()

	t.Run("app", func(t *testing.T) {
		ws, resp := dialH2Socket(t, tr, "https://blog-acme.localhost/ws")
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s %d; want an h2 200", resp.Proto, resp.StatusCode)
		}
		for _, msg := range []string{"one", "two", "three"} {
			ws.send(t, msg)
			if got, err := ws.recv(); err != nil || got != "a:"+msg {
				t.Fatalf("echo %q: %q %v", msg, got, err)
			}
		}
		// Quiet past the app's tunnel timeout: the stream ends.
		done := make(chan error, 1)
		go func() { _, err := ws.recv(); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Error("read a message from an idle WebSocket")
			}
		case <-time.After(10 * time.Second):
			t.Error("the idle WebSocket over h2 was never closed")
		}
	})
	t.Run("platform", func(t *testing.T) {
		ws, resp := dialH2Socket(t, tr, "https://localhost/v1/something")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		ws.send(t, "hi")
		if got, err := ws.recv(); err != nil || got != "platform/tls:hi" {
			t.Fatalf("echo: %q %v", got, err)
		}
	})
	t.Run("app_that_does_not_accept", func(t *testing.T) {
		pr, _ := io.Pipe()
		req, _ := http.NewRequest(http.MethodConnect, "https://blog-acme.localhost/plain", pr)
		req.Header.Set(":protocol", "websocket")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d; want 502 (the app answered 200 without a 101)", resp.StatusCode)
		}
	})
	if n := r.statsOf(blog.Key(), "").active.Load(); n > 1 {
		t.Errorf("%d requests still open", n)
	}
}
