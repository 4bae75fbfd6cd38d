package router

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// HTTPS with HTTP/1.1 takes the same fast path as plain HTTP: the request
// is parsed in place and proxied over a pooled gear connection, with
// X-Forwarded-Proto https and the Alt-Svc advertisement; what the fast
// path does not take goes to net/http with the connection's TLS state.
func TestHTTPSFastPath(t *testing.T) {
	r, st, ca := newTLSRouter(t, func(o *Options) { o.HTTP3 = true })
	a := backend(t, "a", nil)
	app := blog
	app.TunnelTimeout = 400 * time.Millisecond
	put(t, st, r, []store.App{app, {Name: "plain", Domain: "acme", Host: "plain-acme.localhost", HTTPS: store.HTTPSOff}}, map[string]string{"g1": a})
	dial := func(t *testing.T, name string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: name, RootCAs: ca.Roots(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}

	t.Run("proxied_on_the_fast_path", func(t *testing.T) {
		c, br := dial(t, "blog-acme.localhost")
		for range 3 { // keep-alive: one connection, several requests
			io.WriteString(c, "GET /hdr HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
			resp, body := readResp(t, br, "GET")
			if body != "127.0.0.1|blog-acme.localhost|https" {
				t.Errorf("headers at the gear: %q", body)
			}
			if got := resp.Header.Get("Alt-Svc"); got != r.h3alt || got == "" {
				t.Errorf("Alt-Svc %q; want %q", got, r.h3alt)
			}
		}
		if n := r.fastConns.Len(); n != 1 {
			t.Errorf("%d connections on the fast path; want this one", n)
		}
	})
	t.Run("handed_off_with_its_tls_state", func(t *testing.T) {
		// The previous connection is closed; the router notices soon.
		for r.fastConns.Len() != 0 {
			time.Sleep(time.Millisecond)
		}
		c, br := dial(t, "blog-acme.localhost")
		// A chunked request body goes to net/http, which serves this
		// request and the next ones as HTTPS.
		io.WriteString(c, "POST /hdr HTTP/1.1\r\nHost: blog-acme.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		resp, body := readResp(t, br, "POST")
		if body != "127.0.0.1|blog-acme.localhost|https" || resp.Header.Get("Alt-Svc") == "" {
			t.Errorf("after the hand-off: %q, Alt-Svc %q", body, resp.Header.Get("Alt-Svc"))
		}
		if n := r.fastConns.Len(); n != 0 {
			t.Errorf("%d connections on the fast path; want none (handed off)", n)
		}
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: plain-acme.localhost\r\n\r\n")
		resp, _ = readResp(t, br, "GET")
		want := fmt.Sprintf("http://plain-acme.localhost:%d/x", r.Addr().(*net.TCPAddr).Port)
		if resp.StatusCode != 301 || resp.Header.Get("Location") != want {
			t.Errorf("an HTTPS-off app over TLS: %d %q; want 301 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})
	t.Run("websocket_over_tls_idles_out", func(t *testing.T) {
		idleClosedActiveKept(t, "wss://blog-acme.localhost/ws", tlsClient(r, ca.Roots(), false))
	})
	t.Run("sessions_resume_across_one_rotation_not_a_day", func(t *testing.T) {
		// connect makes a connection with the client's session cache and
		// reports whether it resumed a session.
		connect := func(cache tls.ClientSessionCache) bool {
			t.Helper()
			c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "blog-acme.localhost", RootCAs: ca.Roots(),
				NextProtos: []string{"http/1.1"}, ClientSessionCache: cache})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A TLS 1.3 ticket arrives after the handshake: read a response.
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
			if _, body := readResp(t, bufio.NewReader(c), "GET"); body != "a" {
				t.Fatalf("body %q", body)
			}
			return c.ConnectionState().DidResume
		}
		cache := tls.NewLRUClientSessionCache(4)
		if connect(cache) {
			t.Fatal("the first connection resumed a session")
		}
		if !connect(cache) {
			t.Error("the second connection did not resume its session")
		}
		r.tickets.rotate(r.tlsConf, r.h3Conf)
		if !connect(cache) {
			t.Error("a ticket of the key before the rotation was refused")
		}
		old := tls.NewLRUClientSessionCache(4)
		connect(old)
		for range ticketKeys {
			r.tickets.rotate(r.tlsConf, r.h3Conf)
		}
		if connect(old) {
			t.Errorf("a ticket %d rotations old was accepted", ticketKeys)
		}
		if !strings.HasPrefix(r.h3alt, "h3=") {
			t.Errorf("h3alt %q", r.h3alt)
		}
	})
}
