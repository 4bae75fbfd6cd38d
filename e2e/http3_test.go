package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestHTTP3 fetches an app over HTTP/3 from a real server with quic-go's
// client (the platform root trusted), on the UDP twin of the HTTPS port
// that HTTPS responses advertise with Alt-Svc.
func TestHTTP3(t *testing.T) {
	need(t, "git", "ssh", "ssh-keygen", "node")
	root := t.TempDir()
	data := filepath.Join(root, "data")
	t.Cleanup(func() { killGears(data) })
	cfg := filepath.Join(root, "admin.json")
	srv := startServer(t, data, cfg, "127.0.0.1:0", "127.0.0.1:0", "--isolation", "process")
	u := newEnv(t, cfg)
	deployNodeApp(t, u, "acme", "web")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(u.gantry("ca", "show")))
	_, port := splitPort(srv.httpsAddr)

	// HTTPS over TCP says where HTTP/3 is.
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", srv.httpsAddr)
		}}}
	resp, err := h2.Get("https://web-acme.localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("Alt-Svc"), `h3=":`+port+`"; ma=86400`; got != want {
		t.Errorf("Alt-Svc %q; want %q", got, want)
	}

	h3 := &http.Client{Timeout: 10 * time.Second, Transport: &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, srv.httpsAddr, tc, qc)
		}}}
	resp, err = h3.Get("https://web-acme.localhost:" + port + "/")
	if err != nil {
		t.Fatalf("HTTP/3: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/3.0" || !strings.HasPrefix(string(body), "v1") {
		t.Errorf("HTTP/3: %s %q", resp.Proto, body)
	}
	// The API on the platform host too.
	req, _ := http.NewRequest("GET", "https://localhost:"+port+"/v1/info", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken(t, cfg))
	resp, err = h3.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/3.0" {
		t.Errorf("the API over HTTP/3: %s %d", resp.Proto, resp.StatusCode)
	}
}
