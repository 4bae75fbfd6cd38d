package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/pki"
)

// testCA is a private CA standing in for a public one, with leaves for
// the names a test asks.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Public CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

// leaf returns PEM certificate and key for names, with a serial to tell
// certificates apart.
func (ca *testCA) leaf(t *testing.T, serial int64, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
}

func newTLSRouter(t *testing.T, opt func(*Options)) (*Router, *store.Store, *pki.CA) {
	t.Helper()
	ca, err := pki.Open(t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	r, st := newRouterWith(t, func(o *Options) {
		o.TLSListen = "127.0.0.1:0"
		o.Certs = ca
		o.PlatformHosts = []string{"localhost"}
		o.HealthInterval = 100 * time.Millisecond
		if opt != nil {
			opt(o)
		}
	})
	return r, st, ca
}

// write stores records and waits until the router applied them.
func write(t *testing.T, st *store.Store, r *Router, fn func(tx *store.Tx) error) {
	t.Helper()
	if err := st.Update(fn); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.WaitApplied(ctx, st.Rev()); err != nil {
		t.Fatal(err)
	}
}

// tlsClient reaches the router's TLS port whatever the URL's host.
func tlsClient(r *Router, roots *x509.CertPool, h2 bool) *http.Client {
	addr := r.TLSAddr().String()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestTLSBySNIAndHTTP2(t *testing.T) {
	pub := newTestCA(t)
	r, st, ca := newTLSRouter(t, nil)
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	cert1, key1 := pub.leaf(t, 101, "www.shop.test", "shop.test")
	write(t, st, r, func(tx *store.Tx) error {
		tx.Put(store.AliasKey("www.shop.test"), &store.Alias{Host: "www.shop.test", AppKey: blog.Key()})
		return tx.Put(store.CertKey("www.shop.test"), &store.Cert{Host: "www.shop.test", AppKey: blog.Key(), CertPEM: cert1, KeyPEM: key1})
	})

	t.Run("canonical_name_chains_to_platform_root", func(t *testing.T) {
		c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "blog-acme.localhost", RootCAs: ca.Roots(), NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		st := c.ConnectionState()
		if st.NegotiatedProtocol != "h2" {
			t.Errorf("ALPN %q; want h2", st.NegotiatedProtocol)
		}
		if len(st.PeerCertificates) != 2 || !st.PeerCertificates[1].IsCA {
			t.Errorf("chain of %d certificates; want leaf and intermediate", len(st.PeerCertificates))
		}
	})
	t.Run("h2_request", func(t *testing.T) {
		resp, err := tlsClient(r, ca.Roots(), true).Get("https://blog-acme.localhost/hdr")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" || !strings.HasSuffix(string(body), "|https") {
			t.Errorf("%s %q; want HTTP/2.0 with X-Forwarded-Proto https", resp.Proto, body)
		}
	})
	t.Run("http1_over_tls", func(t *testing.T) {
		resp, err := tlsClient(r, ca.Roots(), false).Get("https://blog-acme.localhost/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Proto != "HTTP/1.1" || resp.StatusCode != 200 {
			t.Errorf("%s %d", resp.Proto, resp.StatusCode)
		}
	})
	t.Run("alias_gets_its_own_certificate", func(t *testing.T) {
		c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "www.shop.test", RootCAs: pub.pool})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 101 {
			t.Errorf("serial %d; want the uploaded 101", got)
		}
	})
	t.Run("unknown_name_gets_no_certificate", func(t *testing.T) {
		_, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "nobody.localhost", RootCAs: ca.Roots()})
		if err == nil {
			t.Error("handshake for an unrouted name succeeded")
		}
	})
	t.Run("platform_host_without_sni", func(t *testing.T) {
		c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "127.0.0.1", RootCAs: ca.Roots()})
		if err != nil {
			t.Fatalf("handshake by IP: %v", err)
		}
		c.Close()
	})
	t.Run("wss_with_alias_certificate_survives_certificate_change", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "wss://www.shop.test/ws", &websocket.DialOptions{HTTPClient: tlsClient(r, pub.pool, false)})
		if err != nil {
			t.Fatalf("wss dial: %v", err)
		}
		defer ws.CloseNow()
		echo := func(msg string) {
			t.Helper()
			if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if _, got, err := ws.Read(ctx); err != nil || string(got) != "a:"+msg {
				t.Fatalf("echo %q: %q %v", msg, got, err)
			}
		}
		echo("one")
		cert2, key2 := pub.leaf(t, 202, "www.shop.test")
		write(t, st, r, func(tx *store.Tx) error {
			return tx.Put(store.CertKey("www.shop.test"), &store.Cert{Host: "www.shop.test", AppKey: blog.Key(), CertPEM: cert2, KeyPEM: key2})
		})
		echo("two") // the open WebSocket is untouched
		c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "www.shop.test", RootCAs: pub.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 202 {
			t.Errorf("after the change: serial %d; want 202", got)
		}
	})
}

func TestRedirects(t *testing.T) {
	pub := newTestCA(t)
	r, st, ca := newTLSRouter(t, nil)
	a := backend(t, "a", nil)
	app := blog
	app.HTTPS = store.HTTPSRedirect
	put(t, st, r, []store.App{app, {Name: "plain", Domain: "acme", Host: "plain-acme.localhost", HTTPS: store.HTTPSOff}}, map[string]string{"g1": a})
	cert, key := pub.leaf(t, 1, "www.shop.test", "shop.test")
	write(t, st, r, func(tx *store.Tx) error {
		tx.Put(store.AliasKey("www.shop.test"), &store.Alias{Host: "www.shop.test", AppKey: blog.Key()})
		return tx.Put(store.CertKey("www.shop.test"), &store.Cert{Host: "www.shop.test", AppKey: blog.Key(), CertPEM: cert, KeyPEM: key})
	})
	httpPort := r.Addr().(*net.TCPAddr).Port
	tlsPort := r.TLSAddr().(*net.TCPAddr).Port
	plain := client(r)
	plain.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	check := func(t *testing.T, c *http.Client, method, url string, code int, loc string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader("x"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code || resp.Header.Get("Location") != loc {
			t.Errorf("%s %s: %d %q; want %d %q", method, url, resp.StatusCode, resp.Header.Get("Location"), code, loc)
		}
	}
	t.Run("http_to_https", func(t *testing.T) {
		check(t, plain, "GET", "http://blog-acme.localhost/a/b?q=1", 301, fmt.Sprintf("https://blog-acme.localhost:%d/a/b?q=1", tlsPort))
		check(t, plain, "POST", "http://blog-acme.localhost/form", 308, fmt.Sprintf("https://blog-acme.localhost:%d/form", tlsPort))
		check(t, tlsClient(r, ca.Roots(), true), "GET", "https://blog-acme.localhost/", 200, "")
	})
	t.Run("https_off", func(t *testing.T) {
		check(t, tlsClient(r, ca.Roots(), false), "GET", "https://plain-acme.localhost/x", 301, fmt.Sprintf("http://plain-acme.localhost:%d/x", httpPort))
	})
	t.Run("apex_to_www", func(t *testing.T) {
		check(t, plain, "GET", "http://shop.test/page", 301, fmt.Sprintf("https://www.shop.test:%d/page", tlsPort))
		// Over https, with the www certificate that also covers the apex.
		check(t, tlsClient(r, pub.pool, false), "GET", "https://shop.test/page", 301, fmt.Sprintf("https://www.shop.test:%d/page", tlsPort))
	})
}

// echoServer is a TCP member that answers each line with its name.
type echoServer struct {
	ln   net.Listener
	name string
	wg   sync.WaitGroup
}

func startEcho(t *testing.T, addr, name string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, name: name}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s:%s\n", name, sc.Text())
				}
			}()
		}
	}()
	t.Cleanup(e.stop)
	return e
}

func (e *echoServer) stop() { e.ln.Close(); e.wg.Wait() }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func ask(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(got), err
}

func TestTCPRouteFailover(t *testing.T) {
	r, st, _ := newTLSRouter(t, nil)
	one := startEcho(t, "127.0.0.1:0", "one")
	two := startEcho(t, "127.0.0.1:0", "two")
	port := freePort(t)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": one.ln.Addr().String(), "g2": two.ln.Addr().String()})
	write(t, st, r, func(tx *store.Tx) error {
		rt := store.TCPRoute{AppKey: blog.Key(), Port: port}
		return tx.Put(rt.Key(), &rt)
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	seen := map[string]int{}
	for i := range 10 {
		got, err := ask(addr, fmt.Sprint(i))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		seen[strings.Split(got, ":")[0]]++
	}
	if seen["one"] != 5 || seen["two"] != 5 {
		t.Errorf("round robin: %v; want 5 each", seen)
	}
	// The router listens on 127.0.0.1 only, and so does the route.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.2:%d", port)); err == nil {
		c.Close()
		t.Errorf("the TCP route answers on 127.0.0.2 while the router is bound to 127.0.0.1")
	}

	// A member dies mid-test: every later connection is served by the other.
	deadAddr := two.ln.Addr().String()
	two.stop()
	for i := range 20 {
		got, err := ask(addr, "x")
		if err != nil || got != "one:x" {
			t.Fatalf("connection %d after a member died: %q %v", i, got, err)
		}
	}
	eventually(t, "the dead member fails its health checks", func() bool { return !r.MemberHealthy(deadAddr) })
	// It comes back at the same address: healthy again and in the pool.
	startEcho(t, deadAddr, "two-again")
	eventually(t, "the member is healthy again", func() bool { return r.MemberHealthy(deadAddr) })
	seen = map[string]int{}
	for range 6 {
		got, _ := ask(addr, "y")
		seen[strings.Split(got, ":")[0]]++
	}
	if seen["two-again"] == 0 {
		t.Errorf("revived member gets no connections: %v", seen)
	}

	// Removing the route closes the port.
	write(t, st, r, func(tx *store.Tx) error { return tx.Delete((&store.TCPRoute{Port: port}).Key()) })
	if _, err := ask(addr, "z"); err == nil {
		t.Error("port still served after the route was removed")
	}
}

func TestTLSPassthroughBySNI(t *testing.T) {
	pub := newTestCA(t)
	r, st, ca := newTLSRouter(t, nil)
	a := backend(t, "a", nil)
	// The member terminates TLS itself, with its own certificate.
	certPEM, keyPEM := pub.leaf(t, 77, "db.shop.test")
	pair, _ := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "tls-member:%s", line)
			}()
		}
	}()
	_, memberPort, _ := net.SplitHostPort(ln.Addr().String())
	var mp int
	fmt.Sscan(memberPort, &mp)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	write(t, st, r, func(tx *store.Tx) error {
		rt := store.TCPRoute{AppKey: blog.Key(), SNI: "db.shop.test", TargetPort: mp}
		return tx.Put(rt.Key(), &rt)
	})
	c, err := tls.Dial("tcp", r.TLSAddr().String(), &tls.Config{ServerName: "db.shop.test", RootCAs: pub.pool})
	if err != nil {
		t.Fatalf("passthrough handshake: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 77 {
		t.Errorf("certificate serial %d; want the member's own 77", got)
	}
	fmt.Fprintf(c, "hello\n")
	got, _ := bufio.NewReader(c).ReadString('\n')
	if got != "tls-member:hello\n" {
		t.Errorf("through passthrough: %q", got)
	}
	// HTTPS for other names still terminates at the router.
	resp, err := tlsClient(r, ca.Roots(), true).Get("https://blog-acme.localhost/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("terminated HTTPS beside passthrough: %d", resp.StatusCode)
	}
}

func TestTrustedProxies(t *testing.T) {
	r, st := newRouterWith(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	req, _ := http.NewRequest("GET", "http://blog-acme.localhost/hdr", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "shop.example")
	resp, err := client(r).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "203.0.113.9, 127.0.0.1|shop.example|https"; string(body) != want {
		t.Errorf("from a trusted proxy: %q; want %q", body, want)
	}

	// Not trusted: replaced (the router's default).
	r2, st2 := newRouter(t)
	put(t, st2, r2, []store.App{blog}, map[string]string{"g1": a})
	resp, err = client(r2).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "127.0.0.1|blog-acme.localhost|http"; string(body) != want {
		t.Errorf("from anyone: %q; want %q", body, want)
	}
}

func TestLimitsAndTimeouts(t *testing.T) {
	r, st := newRouterWith(t, func(o *Options) {
		o.HeaderTimeout = 300 * time.Millisecond
		o.IdleTimeout = time.Hour
		o.MaxHeaderBytes = 4 << 10
	})
	a := backend(t, "a", nil)
	app := blog
	app.TunnelTimeout = 400 * time.Millisecond
	put(t, st, r, []store.App{app}, map[string]string{"g1": a})

	t.Run("header_too_large", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://blog-acme.localhost/", nil)
		req.Header.Set("X-Big", strings.Repeat("x", 16<<10))
		resp, err := client(r).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d; want 431", resp.StatusCode)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n")
		// Drip a header byte at a time: the router must hang up anyway.
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c)
			close(closed)
		}()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-closed:
				return
			case <-tick.C:
				if _, err := io.WriteString(c, "X"); err != nil {
					return
				}
			}
		}
	})
	t.Run("slowloris_after_a_request", func(t *testing.T) {
		// A keep-alive connection waits under the idle timeout (an
		// hour here); the next request's head must still come within
		// the header timeout.
		c, br := rawConn(t, r)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n\r\n")
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("first request: %d", resp.StatusCode)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog-acme.localhost\r\n")
		start := time.Now()
		_, err := br.ReadByte()
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("an unfinished head was not cut (%v after %v)", err, time.Since(start))
		}
	})
	t.Run("idle_websocket_closed_active_one_kept", func(t *testing.T) {
		idleClosedActiveKept(t, "ws://blog-acme.localhost/ws", client(r))
	})
}

// idleClosedActiveKept opens two WebSockets through a route whose tunnel
// timeout is 400 ms: the one kept busy for three timeouts lives, the
// idle one is closed.
func idleClosedActiveKept(t *testing.T, url string, c *http.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func() *websocket.Conn {
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: c})
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	active := dial()
	defer active.CloseNow()
	idle := dial()
	defer idle.CloseNow()
	idleErr := make(chan error, 1)
	go func() { _, _, err := idle.Read(ctx); idleErr <- err }()
	for i := range 12 {
		msg := fmt.Sprint(i)
		if err := active.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("active write %d: %v", i, err)
		}
		if _, got, err := active.Read(ctx); err != nil || string(got) != "a:"+msg {
			t.Fatalf("active echo %d: %q %v", i, got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-idleErr:
		if err == nil {
			t.Error("idle websocket read a message")
		}
	case <-ctx.Done():
		t.Error("the idle websocket was never closed")
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	var mu sync.Mutex
	var logBuf bytes.Buffer
	reg := prometheus.NewRegistry()
	r, st := newRouterWith(t, func(o *Options) {
		o.AccessLog = lockedWriter{&mu, &logBuf}
		o.Metrics = reg
	})
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	c := client(r)
	for range 3 {
		fetch(t, c, "http://blog-acme.localhost/page?token=SECRET")
	}
	fetch(t, c, "http://nope.localhost/")
	eventually(t, "access log lines", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(logBuf.String(), "\n") >= 4
	})
	mu.Lock()
	text := logBuf.String()
	mu.Unlock()
	line := strings.Split(text, "\n")[0]
	for _, want := range []string{"app=acme/blog", `host="blog-acme.localhost"`, "status=200", "bytes=1", "gear=" + a, "duration_ms=", `path="/page"`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	if strings.Contains(text, "SECRET") {
		t.Error("the access log holds the query string")
	}
	if !strings.Contains(text, "status=404") {
		t.Errorf("no line for the 404:\n%s", text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			labels := ""
			for _, l := range m.Label {
				labels += l.GetName() + "=" + l.GetValue() + ","
			}
			switch {
			case m.Counter != nil:
				got[mf.GetName()+"{"+labels+"}"] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[mf.GetName()+"{"+labels+"}"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for k, want := range map[string]float64{
		"gantry_http_requests_total{app=acme/blog,code=2xx,}":   3,
		"gantry_http_request_duration_seconds{app=acme/blog,}":  3,
		"gantry_http_bytes_total{app=acme/blog,direction=out,}": 3,
	} {
		if got[k] != want {
			t.Errorf("%s = %v; want %v (all: %v)", k, got[k], want, got)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
