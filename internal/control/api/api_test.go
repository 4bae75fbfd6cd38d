package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

// fakeAgent and fakeBuilder stand in for the roles that run processes;
// the end-to-end test drives the real ones.
type fakeAgent struct {
	rollouts []string
	layout   layout.Layout
}

func (f *fakeAgent) Rollout(ctx context.Context, appKey, depID string, out io.Writer) error {
	f.rollouts = append(f.rollouts, appKey+"@"+depID)
	return nil
}
func (f *fakeAgent) Stop(ctx context.Context, appKey string) error                  { return nil }
func (f *fakeAgent) Delete(ctx context.Context, appKey string) error                { return nil }
func (f *fakeAgent) Status(string) GearStatus                                       { return GearStatus{Status: "running"} }
func (f *fakeAgent) Resize(ctx context.Context, appKey string) error                { return nil }
func (f *fakeAgent) Isolation() string                                              { return "process" }
func (f *fakeAgent) Services(appKey, gearID string) ([]apitypes.ServiceView, error) { return nil, nil }
func (f *fakeAgent) AddCartridge(ctx context.Context, appKey string, c store.Cartridge) (string, int, error) {
	return "127.0.0.1", 5432, nil
}
func (f *fakeAgent) RemoveCartridge(ctx context.Context, appKey, name string) error { return nil }
func (f *fakeAgent) CartridgeAddress(appKey, name string) (string, int, bool)       { return "", 0, false }
func (f *fakeAgent) ScaleTo(ctx context.Context, appKey string, n int, out io.Writer) error {
	f.rollouts = append(f.rollouts, fmt.Sprintf("%s x%d", appKey, n))
	return nil
}

func (f *fakeAgent) ScaleProcess(ctx context.Context, appKey, proc string, n int, out io.Writer) error {
	f.rollouts = append(f.rollouts, fmt.Sprintf("%s %s=%d", appKey, proc, n))
	return nil
}

type fakeBuilder struct{}

func (fakeBuilder) Deploy(ctx context.Context, appKey, commit string, gitEnv []string, out io.Writer) error {
	return nil
}
func (fakeBuilder) GrantPush(user, appKey string) ([]string, func()) { return nil, func() {} }

type harness struct {
	t     *testing.T
	st    *store.Store
	agent *fakeAgent
	srv   *httptest.Server
	admin string
	bob   string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ag := &fakeAgent{layout: layout.Layout{Root: dir}}
	svc := service.New(service.Options{Store: st, Agent: ag, Builder: fakeBuilder{}, Layout: layout.Layout{Root: dir},
		Exe: "/bin/true", CloudDomain: "localhost"})
	a, err := New(Options{Service: svc, Layout: layout.Layout{Root: dir}, Agent: ag, Builder: fakeBuilder{},
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		CloudDomain: "localhost", Version: "test",
		AppURL:     func(h string) string { return "http://" + h + "/" },
		GitSSHURL:  func(d, a string) string { return "ssh://git@localhost/" + d + "/" + a + ".git" },
		GitHTTPURL: func(d, a string) string { return "http://localhost/git/" + d + "/" + a + ".git" }})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, agent: ag, srv: httptest.NewServer(a)}
	t.Cleanup(h.srv.Close)
	_, h.admin, _ = svc.CreateUser(nil, "admin", true)
	var bob apitypes.NewUserView
	h.do(h.admin, "POST", "/v1/users", `{"name":"bob"}`, 201, &bob)
	h.bob = bob.Token
	return h
}

// do sends a request and checks the status; it returns the body.
func (h *harness) do(token, method, path, body string, want int, out any) string {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		h.t.Fatalf("%s %s: got %d; want %d\n%s", method, path, resp.StatusCode, want, data)
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		h.t.Errorf("%s %s: error content type %q; want application/problem+json", method, path, resp.Header.Get("Content-Type"))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: %v\n%s", method, path, err, data)
		}
	}
	return string(data)
}

func (h *harness) problem(token, method, path, body string, status int, code string) apitypes.Problem {
	h.t.Helper()
	var p apitypes.Problem
	h.do(token, method, path, body, status, &p)
	if p.Code != code || p.Detail == "" {
		h.t.Errorf("%s %s: problem %+v; want code %s with a detail", method, path, p, code)
	}
	return p
}

func TestAuth(t *testing.T) {
	h := newHarness(t)
	h.do("", "GET", "/healthz", "", 200, nil)
	h.problem("", "GET", "/v1/apps", "", 401, apitypes.CodeUnauthorized)
	h.problem("gnt_wrong", "GET", "/v1/apps", "", 401, apitypes.CodeUnauthorized)
	h.problem(h.bob, "POST", "/v1/users", `{"name":"eve"}`, 403, apitypes.CodeForbidden)
	h.problem(h.bob, "GET", "/v1/users", "", 403, apitypes.CodeForbidden)
	var info apitypes.InfoView
	h.do(h.bob, "GET", "/v1/info", "", 200, &info)
	if info.User.Name != "bob" || info.User.Admin {
		t.Errorf("bob's info: %+v", info.User)
	}
}

func TestTwoUsersSeeOnlyTheirOwn(t *testing.T) {
	h := newHarness(t)
	h.do(h.admin, "POST", "/v1/domains", `{"name":"acme"}`, 201, nil)
	var app apitypes.AppView
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"blog","type":"nodejs"}`, 201, &app)
	if app.URL != "http://blog-acme.localhost/" || app.GitURL == "" || app.GitHTTPURL == "" {
		t.Errorf("created app: %+v", app)
	}

	h.problem(h.bob, "POST", "/v1/domains", `{"name":"acme"}`, 409, apitypes.CodeNameTaken)
	h.problem(h.bob, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"nodejs"}`, 404, "domain_not_found")
	for _, op := range []struct{ method, path, body string }{
		{"GET", "/v1/domains/acme/apps/blog", ""},
		{"DELETE", "/v1/domains/acme/apps/blog", ""},
		{"POST", "/v1/domains/acme/apps/blog/stop", ""},
		{"POST", "/v1/domains/acme/apps/blog/restart", ""},
		{"GET", "/v1/domains/acme/apps/blog/env", ""},
		{"PATCH", "/v1/domains/acme/apps/blog/env", `{"set":{"A":"1"}}`},
		{"GET", "/v1/domains/acme/apps/blog/logs", ""},
		{"GET", "/v1/domains/acme/apps/blog/deployments", ""},
		{"POST", "/v1/domains/acme/apps/blog/runs", `{"command":"id"}`},
	} {
		h.problem(h.bob, op.method, op.path, op.body, 404, "app_not_found")
	}
	h.problem(h.bob, "DELETE", "/v1/domains/acme", "", 404, "domain_not_found")
	var apps []apitypes.AppView
	h.do(h.bob, "GET", "/v1/apps", "", 200, &apps)
	if len(apps) != 0 {
		t.Errorf("bob lists %d apps; want 0", len(apps))
	}
	var domains []apitypes.DomainView
	h.do(h.bob, "GET", "/v1/domains", "", 200, &domains)
	if len(domains) != 0 {
		t.Errorf("bob lists domains %+v", domains)
	}
	h.do(h.admin, "GET", "/v1/apps", "", 200, &apps)
	if len(apps) != 1 {
		t.Errorf("admin lists %d apps; want 1", len(apps))
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t)
	h.do(h.admin, "POST", "/v1/domains", `{"name":"acme"}`, 201, nil)
	h.problem(h.admin, "POST", "/v1/domains", `{"name":"Bad_Name"}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"-x","type":"nodejs"}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"cobol"}`, 422, apitypes.CodeInvalid)
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"static"}`, 201, nil)
	h.problem(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"static"}`, 409, apitypes.CodeNameTaken)
	// app "a-b" in "acme" and app "a" in "b-acme" would share a hostname.
	h.do(h.admin, "POST", "/v1/domains", `{"name":"b-acme"}`, 201, nil)
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"a-b","type":"static"}`, 201, nil)
	p := h.problem(h.admin, "POST", "/v1/domains/b-acme/apps", `{"name":"a","type":"static"}`, 409, apitypes.CodeNameTaken)
	if !strings.Contains(p.Detail, "a-b-acme.localhost") {
		t.Errorf("hostname clash detail: %q", p.Detail)
	}
	h.problem(h.admin, "PATCH", "/v1/domains/acme/apps/x/env", `{"set":{"PATH":"/x"}}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "PATCH", "/v1/domains/acme/apps/x/env", `{"set":{"GANTRY_X":"1"}}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "PATCH", "/v1/domains/acme/apps/x/env", `{"unset":["NOPE"]}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "POST", "/v1/sshkeys", `{"key":"ssh-rsa AAAA garbage"}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "POST", "/v1/sshkeys", `{"key":"-----BEGIN OPENSSH PRIVATE KEY-----"}`, 400, apitypes.CodeInvalid)
	h.problem(h.admin, "POST", "/v1/domains/acme/apps/x/start", "", 409, apitypes.CodeNothingRunning)
	h.problem(h.admin, "DELETE", "/v1/domains/acme", "", 409, apitypes.CodeConflict)
}

// A one-off run over the API: the output and exit code of an attached
// one, the gear of a detached one; nothing deployed, or no command, is
// refused.
func TestRunOverTheAPI(t *testing.T) {
	h := newHarness(t)
	h.do(h.admin, "POST", "/v1/domains", `{"name":"acme"}`, 201, nil)
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"static"}`, 201, nil)
	h.problem(h.admin, "POST", "/v1/domains/acme/apps/x/runs", `{"command":"id"}`, 409, apitypes.CodeNothingRunning)
	h.st.Update(func(tx *store.Tx) error {
		var a store.App
		tx.Get(store.AppKey("acme", "x"), &a)
		a.ActiveDeployment = "d1"
		return tx.Put(a.Key(), &a)
	})
	h.problem(h.admin, "POST", "/v1/domains/acme/apps/x/runs", `{"command":" "}`, 400, apitypes.CodeInvalid)
	var v apitypes.RunView
	h.do(h.admin, "POST", "/v1/domains/acme/apps/x/runs", `{"command":"rake db:migrate"}`, 200, &v)
	if v.ExitCode == nil || *v.ExitCode != 3 || v.Output != "ran \"rake db:migrate\" in apps/acme/x\n" || v.Detached {
		t.Errorf("attached run: %+v", v)
	}
	v = apitypes.RunView{}
	h.do(h.admin, "POST", "/v1/domains/acme/apps/x/runs", `{"command":"sleep 60","detach":true}`, 200, &v)
	if v.Gear != "r1" || !v.Detached || v.ExitCode != nil {
		t.Errorf("detached run: %+v", v)
	}
}

func TestEnvChangeRestartsRunningApp(t *testing.T) {
	h := newHarness(t)
	h.do(h.admin, "POST", "/v1/domains", `{"name":"acme"}`, 201, nil)
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"static"}`, 201, nil)
	var env map[string]string
	h.do(h.admin, "PATCH", "/v1/domains/acme/apps/x/env", `{"set":{"A":"1","B":"2"}}`, 200, &env)
	if len(h.agent.rollouts) != 0 {
		t.Errorf("an app with nothing deployed was restarted: %v", h.agent.rollouts)
	}
	// Pretend a deployment is live: an env change restarts it.
	h.st.Update(func(tx *store.Tx) error {
		var a store.App
		tx.Get(store.AppKey("acme", "x"), &a)
		a.ActiveDeployment = "d1"
		return tx.Put(a.Key(), &a)
	})
	env = nil
	h.do(h.admin, "PATCH", "/v1/domains/acme/apps/x/env", `{"unset":["A"]}`, 200, &env)
	if len(env) != 1 || env["B"] != "2" {
		t.Errorf("env: %v", env)
	}
	if len(h.agent.rollouts) != 1 || h.agent.rollouts[0] != "apps/acme/x@d1" {
		t.Errorf("rollouts after env change: %v; want the active deployment once", h.agent.rollouts)
	}
	env = nil
	h.do(h.admin, "GET", "/v1/domains/acme/apps/x/env", "", 200, &env)
	if len(env) != 1 || env["B"] != "2" {
		t.Errorf("stored env: %v", env)
	}
}

func TestOpenAPIAndDocs(t *testing.T) {
	h := newHarness(t)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	h.do("", "GET", "/openapi.json", "", 200, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	for _, p := range []string{"/v1/apps", "/v1/domains/{domain}/apps/{app}", "/v1/domains/{domain}/apps/{app}/deployments/{id}/activate", "/v1/sshkeys"} {
		if doc.Paths[p] == nil {
			t.Errorf("openapi lacks %s", p)
		}
	}
	page := h.do("", "GET", "/docs", "", 200, nil)
	if !strings.Contains(page, "/docs/swagger-ui-bundle.js") || strings.Contains(page, "https://") {
		t.Errorf("docs page must load its script locally: %s", page)
	}
	js := h.do("", "GET", "/docs/swagger-ui-bundle.js", "", 200, nil)
	if len(js) < 100000 {
		t.Errorf("embedded swagger ui is %d bytes", len(js))
	}
}

func TestGitHTTPAuth(t *testing.T) {
	h := newHarness(t)
	h.do(h.admin, "POST", "/v1/domains", `{"name":"acme"}`, 201, nil)
	h.do(h.admin, "POST", "/v1/domains/acme/apps", `{"name":"x","type":"static"}`, 201, nil)
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", h.srv.URL+"/git/acme/x.git/info/refs?service=git-upload-pack", nil)
		if tok != "" {
			req.SetBasicAuth("git", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(""); c != 401 {
		t.Errorf("no token: %d", c)
	}
	if c := get(h.bob); c != 404 {
		t.Errorf("other user's token: %d; want 404", c)
	}
	if c := get(h.admin); c != 200 {
		t.Errorf("owner's token: %d; want 200", c)
	}
}

func (f *fakeAgent) PrepareAppDir(app *store.App) error { return f.layout.EnsureApp(app.ID) }
func (f *fakeAgent) RemoveAppDir(app *store.App) error  { return os.RemoveAll(f.layout.AppDir(app.ID)) }
func (f *fakeAgent) PurgeCache(app *store.App) (int64, error) {
	return 0, os.RemoveAll(f.layout.Cache(app.ID))
}
func (f *fakeAgent) DiskUsage(app *store.App) (used, limit int64) { return 0, 0 }

func (f *fakeAgent) Evacuate(context.Context, string, string, io.Writer) (int, error) { return 0, nil }
func (f *fakeAgent) RunCommand(_ context.Context, appKey, command string, detach bool, out io.Writer) (string, int, error) {
	if detach {
		return "r1", 0, nil
	}
	fmt.Fprintf(out, "ran %q in %s\n", command, appKey)
	return "r1", 3, nil
}
