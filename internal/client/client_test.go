package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestPlainHTTP(t *testing.T) {
	for server, want := range map[string]bool{
		"http://paas.example.com":    true,
		"http://192.0.2.7:8080":      true,
		"http://[2001:db8::1]":       true,
		"https://paas.example.com":   false,
		"http://127.0.0.1:8080":      false,
		"http://127.9.9.9":           false,
		"http://[::1]:80":            false,
		"http://localhost:8080":      false,
		"http://blog-acme.localhost": false,
	} {
		if got := PlainHTTP(server); got != want {
			t.Errorf("PlainHTTP(%q) = %v; want %v", server, got, want)
		}
	}
}

// The token never leaves for a plain-HTTP server elsewhere: the request
// is not even sent.
func TestTokenNotSentInTheClear(t *testing.T) {
	sent := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer srv.Close()
	c := New("http://gantry.invalid", "secret")
	c.HTTP = &http.Client{Transport: rewrite{srv.URL}}
	err := c.Do(context.Background(), "GET", "/v1/info", nil, nil)
	if !errors.Is(err, ErrPlainHTTP) || sent {
		t.Fatalf("err %v, sent %v; want ErrPlainHTTP and nothing sent", err, sent)
	}
	c.Insecure = true
	if err := c.Do(context.Background(), "GET", "/v1/info", nil, nil); err != nil || !sent {
		t.Fatalf("with Insecure: err %v, sent %v", err, sent)
	}
}

// rewrite sends every request to one test server.
type rewrite struct{ to string }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	u := *req.URL
	u.Scheme, u.Host = "http", r.to[len("http://"):]
	req2 := req.Clone(req.Context())
	req2.URL = &u
	return http.DefaultTransport.RoundTrip(req2)
}
