package router

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The platform (API, git over HTTP) takes tokens over plain HTTP only from
// this machine and trusted proxies.
func TestPlatformOverPlainHTTP(t *testing.T) {
	served := 0
	r, _ := newRouterWith(t, func(o *Options) {
		o.PlatformHosts = []string{"paas.example.com"}
		o.Platform = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ })
	})
	for _, c := range []struct {
		remote string
		code   int
	}{
		{"127.0.0.1:5000", 200},
		{"[::1]:5000", 200},
		{"192.0.2.10:5000", 403},
	} {
		req := httptest.NewRequest("POST", "http://paas.example.com/v1/apps", nil)
		req.RemoteAddr = c.remote
		req.Header.Set("Authorization", "Bearer x")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != c.code {
			t.Errorf("from %s: %d; want %d", c.remote, w.Code, c.code)
		}
		if c.code == 403 && !strings.Contains(w.Body.String(), "https_required") {
			t.Errorf("from %s: %s", c.remote, w.Body.String())
		}
	}
	// The platform root certificate is public, over plain HTTP too.
	req := httptest.NewRequest("GET", "http://paas.example.com/v1/ca", nil)
	req.RemoteAddr = "192.0.2.10:5000"
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("GET /v1/ca from elsewhere: %d; want it served", w.Code)
	}
	if served != 3 {
		t.Errorf("served %d; want 3", served)
	}
}
