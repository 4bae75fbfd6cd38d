package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/youmark/pkcs8"
)

type aliasJSON struct {
	Host        string `json:"host"`
	Certificate struct {
		Source   string   `json:"source"`
		Names    []string `json:"names"`
		Warnings []string `json:"warnings"`
	} `json:"certificate"`
	RedirectsFrom string `json:"redirects_from"`
}

type routedApp struct {
	appJSON
	HTTPSURL  string      `json:"https_url"`
	HTTPS     string      `json:"https"`
	Aliases   []aliasJSON `json:"aliases"`
	TCPRoutes []struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Error   string `json:"error"`
	} `json:"tcp_routes"`
}

// publicCA stands in for a public CA: the server trusts it through
// SSL_CERT_FILE, as it would trust the system's roots.
type publicCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newPublicCA(t *testing.T, dir string) *publicCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "E2E Public Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, "public-root.pem")
	writeFile(t, file, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	return &publicCA{cert: c, key: key, file: file}
}

// issue writes a certificate and an (optionally encrypted) key for names.
func (ca *publicCA) issue(t *testing.T, dir string, serial int64, notAfter time.Time, pass string, names ...string) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	var keyPEM []byte
	if pass != "" {
		enc, err := pkcs8.MarshalPrivateKey(key, []byte(pass), nil)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc})
	} else {
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	}
	certFile = filepath.Join(dir, fmt.Sprintf("cert-%d.pem", serial))
	keyFile = filepath.Join(dir, fmt.Sprintf("key-%d.pem", serial))
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeFile(t, keyFile, string(keyPEM), 0o600)
	return certFile, keyFile
}

// TestRouting: HTTPS with the platform CA and HTTP/2, aliases with their
// own certificates (checked before use), wss, redirects, TCP routes with
// failover, access log and metrics, all through the CLI.
func TestRouting(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	t.Run("process", func(t *testing.T) { routing(t, isolationArgs(t, "process")) })
	t.Run("namespaces", func(t *testing.T) { routing(t, isolationArgs(t, "namespaces")) })
}

func routing(t *testing.T, isolation []string) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data); cleanupNetwork(isolation) })
	pub := newPublicCA(t, root)
	t.Setenv("SSL_CERT_FILE", pub.file)
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", append(isolation, "--health-interval", "200ms")...)
	_, httpsPort := splitPort(srv.httpsAddr)
	_, httpPort := splitPort(srv.httpAddr)
	u := newEnv(t, cfg)
	deployNodeApp(t, u, "acme", "web")
	u.gantry("app", "scale", "web", "--gears", "2")
	show := func() routedApp {
		var s routedApp
		u.gantryJSON(&s, "app", "show", "web")
		return s
	}

	// The platform root, as users get it.
	rootPEM := u.gantry("ca", "show")
	platformRoots := x509.NewCertPool()
	if !platformRoots.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("gantry ca show printed no certificate:\n%s", rootPEM)
	}
	publicRoots := x509.NewCertPool()
	publicRoots.AddCert(pub.cert)
	httpsClient := func(roots *x509.CertPool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", srv.httpsAddr)
				}}}
	}
	serialOf := func(name string) int64 {
		t.Helper()
		c, err := tls.Dial("tcp", srv.httpsAddr, &tls.Config{ServerName: name, RootCAs: publicRoots})
		if err != nil {
			t.Fatalf("TLS to %s: %v", name, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}

	t.Run("https_with_platform_ca_and_h2", func(t *testing.T) {
		s := show()
		if !strings.HasPrefix(s.HTTPSURL, "https://web-acme.localhost:"+httpsPort) {
			t.Errorf("https_url %q", s.HTTPSURL)
		}
		resp, err := httpsClient(platformRoots).Get("https://web-acme.localhost/")
		if err != nil {
			t.Fatalf("https with the platform root trusted: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "v1 \n" || resp.Proto != "HTTP/2.0" {
			t.Errorf("%s %d %q", resp.Proto, resp.StatusCode, body)
		}
	})

	t.Run("aliases_and_bad_input", func(t *testing.T) {
		var al aliasJSON
		u.gantryJSON(&al, "alias", "add", "web", "WWW.Shop.Test.")
		if al.Host != "www.shop.test" || al.RedirectsFrom != "shop.test" {
			t.Errorf("alias add: %+v", al)
		}
		for _, c := range []struct{ host, says string }{
			{"www.shop.test", "already an alias"},
			{"bad_host!.com", "not valid"},
			{"*.com", "too broad"},
			{"a.*.example.com", "wildcard"},
			{"x-acme.localhost", "cloud domain"},
			{"192.0.2.7", "IP address"},
			{"bücher.example", "punycode"},
		} {
			if out := u.gantryFails("alias", "add", "web", c.host); !strings.Contains(out, c.says) {
				t.Errorf("alias add %q: %q; want %q", c.host, out, c.says)
			}
		}
		u.gantry("alias", "add", "web", "xn--bcher-kva.example") // IDN in punycode is fine
		// Another user cannot take the host, nor see the app.
		var mallory struct {
			Token string `json:"token"`
		}
		u.gantryJSON(&mallory, "user", "create", "mallory")
		m := newEnv(t, filepath.Join(root, "mallory.json"))
		m.gantry("login", "--server", "http://"+srv.httpAddr, "--token", mallory.Token)
		m.gantry("domain", "create", "evil")
		m.gantry("app", "create", "x", "--type", "static")
		if out := m.gantryFails("alias", "add", "x", "www.shop.test"); !strings.Contains(out, "served by another user's app") {
			t.Errorf("another user's alias: %q", out)
		}
		if out := m.gantryFails("alias", "list", "web", "--domain", "acme"); !strings.Contains(out, "no app") {
			t.Errorf("another user's app aliases: %q", out)
		}
	})

	t.Run("alias_certificate_checked_then_served", func(t *testing.T) {
		dir := t.TempDir()
		good, goodKey := pub.issue(t, dir, 1001, time.Now().Add(60*24*time.Hour), "pw-1", "www.shop.test", "shop.test")
		if out := u.gantryFails("alias", "cert", "web", "www.shop.test", "--certificate", good, "--private-key", goodKey); !strings.Contains(out, "passphrase") {
			t.Errorf("encrypted key without passphrase: %q", out)
		}
		var al aliasJSON
		u.gantryJSON(&al, "alias", "cert", "web", "www.shop.test", "--certificate", good, "--private-key", goodKey, "--passphrase", "pw-1")
		if al.Certificate.Source != "upload" || len(al.Certificate.Warnings) != 0 {
			t.Errorf("upload: %+v", al)
		}
		if got := serialOf("www.shop.test"); got != 1001 {
			t.Errorf("served serial %d; want 1001", got)
		}
		// A WebSocket over wss with the alias's own certificate.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "wss://www.shop.test:"+httpsPort+"/", &websocket.DialOptions{HTTPClient: httpsClient(publicRoots)})
		if err != nil {
			t.Fatalf("wss through the alias: %v", err)
		}
		ws.Write(ctx, websocket.MessageText, []byte("over wss"))
		if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "over wss" {
			t.Errorf("wss echo: %q %v", msg, err)
		}

		// Bad uploads are refused and change nothing.
		other, otherKey := pub.issue(t, dir, 1002, time.Now().Add(60*24*time.Hour), "", "www.shop.test")
		old, oldKey := pub.issue(t, dir, 1003, time.Now().Add(-time.Minute), "", "www.shop.test")
		wrongName, wrongNameKey := pub.issue(t, dir, 1004, time.Now().Add(60*24*time.Hour), "", "www.elsewhere.test")
		garbage := filepath.Join(dir, "garbage.pem")
		writeFile(t, garbage, "not a certificate\n", 0o644)
		for _, c := range []struct {
			cert, key, says string
		}{
			{other, goodKey, "does not belong"},
			{old, oldKey, "expired"},
			{wrongName, wrongNameKey, "does not cover www.shop.test"},
			{garbage, otherKey, "no PEM certificate"},
		} {
			out := u.gantryFails("alias", "cert", "web", "www.shop.test", "--certificate", c.cert, "--private-key", c.key, "--passphrase", "pw-1")
			if !strings.Contains(out, c.says) {
				t.Errorf("bad upload: %q; want %q", out, c.says)
			}
		}
		selfSigned, selfKey := selfSignedFiles(t, dir, "www.shop.test")
		if out := u.gantryFails("alias", "cert", "web", "www.shop.test", "--certificate", selfSigned, "--private-key", selfKey); !strings.Contains(out, "--force") {
			t.Errorf("self-signed without --force: %q", out)
		}
		if got := serialOf("www.shop.test"); got != 1001 {
			t.Errorf("after refused uploads the served serial is %d; want 1001", got)
		}
		// The open WebSocket lived through all of it; a good replacement
		// applies without a restart.
		u.gantry("alias", "cert", "web", "www.shop.test", "--certificate", other, "--private-key", otherKey)
		if got := serialOf("www.shop.test"); got != 1002 {
			t.Errorf("after the replacement: serial %d; want 1002", got)
		}
		ws.Write(ctx, websocket.MessageText, []byte("still"))
		if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "still" {
			t.Errorf("wss after certificate change: %q %v", msg, err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
		// Self-signed with --force: accepted with a warning.
		out := u.gantry("alias", "cert", "web", "www.shop.test", "--certificate", selfSigned, "--private-key", selfKey, "--force")
		if !strings.Contains(out, "Warning:") || !strings.Contains(out, "self-signed") {
			t.Errorf("forced self-signed: %q", out)
		}
		u.gantry("alias", "cert", "web", "www.shop.test", "--certificate", other, "--private-key", otherKey)
	})

	t.Run("redirects", func(t *testing.T) {
		plain := srv.httpClient()
		plain.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		location := func(c *http.Client, url string) string {
			t.Helper()
			resp, err := c.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		if got, want := location(plain, srv.url("shop.test", "/p")), "301 http://www.shop.test:"+httpPort+"/p"; got != want {
			t.Errorf("apex over http: %q; want %q", got, want)
		}
		u.gantry("app", "set", "web", "--https", "redirect")
		if got, want := location(plain, srv.url("web-acme.localhost", "/x?y=1")), "301 https://web-acme.localhost:"+httpsPort+"/x?y=1"; got != want {
			t.Errorf("http to https: %q; want %q", got, want)
		}
		if got, want := location(plain, srv.url("shop.test", "/p")), "301 https://www.shop.test:"+httpsPort+"/p"; got != want {
			t.Errorf("apex with https redirect: %q; want %q", got, want)
		}
		if got := location(httpsClient(publicRoots), "https://www.shop.test/"); got != "200 " {
			t.Errorf("https itself: %q", got)
		}
		if out := u.gantryFails("app", "set", "web", "--https", "sometimes"); !strings.Contains(out, "allow") {
			t.Errorf("bad https mode: %q", out)
		}
		u.gantry("app", "set", "web", "--https", "allow")
	})

	t.Run("tcp_route_fails_over", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if out := u.gantryFails("route", "tcp", "web", "--port", httpPort); !strings.Contains(out, "platform's own") && !strings.Contains(out, "in use") {
			t.Errorf("route on the router's port: %q", out)
		}
		if out := u.gantryFails("route", "tcp", "web", "--port", "80"); !strings.Contains(out, "1024-65535") {
			t.Errorf("route on port 80: %q", out)
		}
		u.gantry("route", "tcp", "web", "--port", fmt.Sprint(port))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		gearOver := func() (string, error) {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return "", err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET /env/GANTRY_GEAR_ID HTTP/1.0\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		gears := map[string]bool{}
		for range 6 {
			g, err := gearOver()
			if err != nil {
				t.Fatalf("through the TCP route: %v", err)
			}
			gears[g] = true
		}
		if len(gears) != 2 {
			t.Errorf("round robin over 2 gears reached %v", gears)
		}
		s := show()
		if len(s.TCPRoutes) != 1 || s.TCPRoutes[0].Error != "" {
			t.Errorf("tcp_routes: %+v", s.TCPRoutes)
		}
		// Kill a gear's process: every connection still gets an answer.
		// (Connections the kernel accepted for it just before it died are
		// lost with it, as with any proxy: wait until it refuses.)
		victim := s.Gears[0]
		syscall.Kill(victim.PID, syscall.SIGKILL)
		eventually(t, "the killed gear refuses connections", 10*time.Second, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(victim.IP, fmt.Sprint(victim.Port)), time.Second)
			if err != nil {
				return nil
			}
			c.Close()
			return fmt.Errorf("gear %s still accepts", victim.ID)
		})
		for i := range 20 {
			if _, err := gearOver(); err != nil {
				t.Fatalf("connection %d after a gear was killed: %v\n%s", i, err, srv.log.String())
			}
		}
		u.gantry("route", "remove", "web", fmt.Sprint(port))
		if _, err := gearOver(); err == nil {
			t.Error("the port still answers after route remove")
		}
	})

	t.Run("access_log_and_metrics", func(t *testing.T) {
		eventually(t, "access log lines for the app", 5*time.Second, func() error {
			b, err := os.ReadFile(filepath.Join(data, "logs", "access.log"))
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), "app=acme/web") || !strings.Contains(string(b), "status=200") {
				return fmt.Errorf("no line for acme/web:\n%s", b)
			}
			return nil
		})
		req, _ := newAuthRequest("GET", "http://localhost:"+httpPort+"/metrics", adminToken(t, cfg))
		resp, err := srv.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`gantry_http_requests_total{app="acme/web",code="2xx"}`, `gantry_http_request_duration_seconds_bucket{app="acme/web"`, `gantry_websocket_connections{app="acme/web"}`, `gantry_tcp_connections_total{app="acme/web"}`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func selfSignedFiles(t *testing.T, dir, name string) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour * 3)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	c, k := filepath.Join(dir, "self.pem"), filepath.Join(dir, "self.key")
	writeFile(t, c, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeFile(t, k, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})), 0o600)
	return c, k
}
