package service

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
)

// fakeAgent runs nothing and records what it was asked.
type fakeAgent struct{ calls []string }

func (f *fakeAgent) Rollout(_ context.Context, appKey, depID string, _ io.Writer) error {
	f.calls = append(f.calls, "rollout "+appKey+" "+depID)
	return nil
}
func (f *fakeAgent) Stop(_ context.Context, appKey string) error {
	f.calls = append(f.calls, "stop "+appKey)
	return nil
}
func (f *fakeAgent) Delete(_ context.Context, appKey string) error {
	f.calls = append(f.calls, "delete "+appKey)
	return nil
}
func (f *fakeAgent) Resize(context.Context, string) error { return nil }
func (f *fakeAgent) ScaleTo(_ context.Context, appKey string, n int, _ io.Writer) error {
	f.calls = append(f.calls, "scale "+appKey)
	return nil
}
func (f *fakeAgent) ScaleProcess(_ context.Context, appKey, proc string, n int, _ io.Writer) error {
	f.calls = append(f.calls, fmt.Sprintf("scale %s %s=%d", appKey, proc, n))
	return nil
}
func (f *fakeAgent) AddCartridge(context.Context, string, store.Cartridge) (string, int, error) {
	return "127.0.0.1", 5432, nil
}
func (f *fakeAgent) RemoveCartridge(context.Context, string, string) error { return nil }
func (f *fakeAgent) CartridgeAddress(string, string) (string, int, bool)   { return "", 0, false }
func (f *fakeAgent) PrepareAppDir(*store.App) error                        { return nil }
func (f *fakeAgent) RemoveAppDir(*store.App) error                         { return nil }
func (f *fakeAgent) PurgeCache(*store.App) (int64, error)                  { return 0, nil }

type fakeBuilder struct{ deploys int }

func (b *fakeBuilder) Deploy(context.Context, string, string, []string, io.Writer) error {
	b.deploys++
	return nil
}

func appService(t *testing.T) (*Service, *fakeAgent, *fakeBuilder, store.User, store.User) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ag, b := &fakeAgent{}, &fakeBuilder{}
	s := New(Options{Store: st, Agent: ag, Builder: b, Layout: layout.Layout{Root: dir}, Exe: "/bin/true",
		CloudDomain: "localhost", PlatformHosts: []string{"localhost"}, ReservedPorts: []int{8080}, HTTPSPort: 8443, AliasVerification: VerifyOff, MaxGears: 16})
	admin, _, _ := s.CreateUser(nil, "admin", true)
	alice, _, _ := s.CreateUser(&admin, "alice", false)
	bob, _, _ := s.CreateUser(&admin, "bob", false)
	s.CreateDomain(&alice, "acme")
	s.CreateDomain(&bob, "bobco")
	return s, ag, b, alice, bob
}

// Apps: empty or with starter code, names and hostnames taken once,
// other users' apps invisible.
func TestAppRules(t *testing.T) {
	s, ag, b, alice, bob := appService(t)
	ctx := context.Background()
	app, deployErr, err := s.CreateApp(ctx, &alice, "acme", apitypes.CreateAppRequest{Name: "blog"})
	if err != nil || deployErr != nil || app.Type != "" || b.deploys != 0 {
		t.Fatalf("an empty app: %+v %v %v, %d deploys", app, deployErr, err, b.deploys)
	}
	if _, _, err := s.CreateApp(ctx, &alice, "acme", apitypes.CreateAppRequest{Name: "shop", Type: "nodejs"}); err != nil || b.deploys != 1 {
		t.Fatalf("an app with starter code: %v, %d deploys", err, b.deploys)
	}
	for _, tc := range []struct {
		name   string
		caller *store.User
		domain string
		req    apitypes.CreateAppRequest
		kind   Kind
	}{
		{"taken name", &alice, "acme", apitypes.CreateAppRequest{Name: "blog"}, Conflict},
		{"bad name", &alice, "acme", apitypes.CreateAppRequest{Name: "Blog!"}, Invalid},
		{"bad type", &alice, "acme", apitypes.CreateAppRequest{Name: "x", Type: "cobol"}, Invalid},
		{"too many gears", &alice, "acme", apitypes.CreateAppRequest{Name: "y", Scale: 99}, Invalid},
		{"someone else's domain", &bob, "acme", apitypes.CreateAppRequest{Name: "z"}, NotFound},
	} {
		if _, _, err := s.CreateApp(ctx, tc.caller, tc.domain, tc.req); !IsKind(err, tc.kind) {
			t.Errorf("%s: %v; want kind %d", tc.name, err, tc.kind)
		}
	}
	if _, err := s.App(&bob, "acme", "blog"); !IsKind(err, NotFound) {
		t.Errorf("bob sees alice's app: %v", err)
	}
	if apps, _ := s.Apps(&bob, "", ""); len(apps) != 0 {
		t.Errorf("bob lists %d apps", len(apps))
	}
	if _, err := s.AppAction(ctx, &alice, "acme", "blog", "restart"); !IsKind(err, Conflict) {
		t.Errorf("restarting an app with nothing deployed: %v", err)
	}
	if _, err := s.PatchEnv(ctx, &alice, "acme", "blog", apitypes.EnvPatch{Set: map[string]string{"GANTRY_X": "1"}}); !IsKind(err, Invalid) {
		t.Errorf("a reserved variable: %v", err)
	}
	if _, err := s.PatchEnv(ctx, &alice, "acme", "blog", apitypes.EnvPatch{Unset: []string{"NOPE"}}); !IsKind(err, Invalid) {
		t.Errorf("unsetting what is not set: %v", err)
	}
	if err := s.DeleteApp(ctx, &alice, "acme", "blog"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ag.calls, ","); got != "delete apps/acme/blog" {
		t.Errorf("agent calls %q", got)
	}
	// The hostname is free again.
	if _, _, err := s.CreateApp(ctx, &alice, "acme", apitypes.CreateAppRequest{Name: "blog"}); err != nil {
		t.Errorf("re-creating a deleted app: %v", err)
	}
}

// Aliases, TCP routes and scaling refuse what is not allowed, and an
// alias belongs to one user.
func TestRoutingAndScalingRules(t *testing.T) {
	s, _, _, alice, bob := appService(t)
	ctx := context.Background()
	s.CreateApp(ctx, &alice, "acme", apitypes.CreateAppRequest{Name: "blog"})
	s.CreateApp(ctx, &bob, "bobco", apitypes.CreateAppRequest{Name: "web"})
	if _, host, err := s.AddAlias(ctx, &alice, "acme", "blog", "WWW.Example.COM."); err != nil || host != "www.example.com" {
		t.Fatalf("alias: %q %v", host, err)
	}
	for _, tc := range []struct {
		name string
		err  error
		kind Kind
	}{
		{"the platform's host", second3(s.AddAlias(ctx, &alice, "acme", "blog", "localhost")), Invalid},
		{"another user's name", second3(s.AddAlias(ctx, &bob, "bobco", "web", "www.example.com")), Conflict},
		{"the apex of another user's www", second3(s.AddAlias(ctx, &bob, "bobco", "web", "example.com")), Conflict},
		{"removing another app's alias", s.RemoveAlias(ctx, &bob, "bobco", "web", "www.example.com"), NotFound},
		{"a TCP route on a platform port", second(s.AddTCPRoute(ctx, &alice, "acme", "blog", apitypes.TCPRouteRequest{Port: 8080})), Conflict},
		{"a TCP route below 1024", second(s.AddTCPRoute(ctx, &alice, "acme", "blog", apitypes.TCPRouteRequest{Port: 80})), Invalid},
		{"a TCP route with port and SNI", second(s.AddTCPRoute(ctx, &alice, "acme", "blog", apitypes.TCPRouteRequest{Port: 20000, SNI: "db.example.com"})), Invalid},
		{"a wildcard SNI route", second(s.AddTCPRoute(ctx, &alice, "acme", "blog", apitypes.TCPRouteRequest{SNI: "*.example.com"})), Invalid},
		{"removing a route that is not there", s.RemoveTCPRoute(ctx, &alice, "acme", "blog", "port-23456"), NotFound},
		{"gears and a range", second(s.Scale(ctx, &alice, "acme", "blog", apitypes.ScaleRequest{Gears: ptr(2), Min: ptr(1)})), Invalid},
		{"nothing to change", second(s.Scale(ctx, &alice, "acme", "blog", apitypes.ScaleRequest{})), Invalid},
		{"idle without when", second(s.Idle(ctx, &alice, "acme", "blog", apitypes.IdleRequest{})), Invalid},
		{"idle now with nothing deployed", second(s.Idle(ctx, &alice, "acme", "blog", apitypes.IdleRequest{Now: true})), Conflict},
		{"a second cartridge of a kind", secondCart(s, ctx, &alice), Conflict},
	} {
		if !IsKind(tc.err, tc.kind) {
			t.Errorf("%s: %v; want kind %d", tc.name, tc.err, tc.kind)
		}
	}
	r, err := s.AddTCPRoute(ctx, &alice, "acme", "blog", apitypes.TCPRouteRequest{SNI: "db.example.com"})
	if err != nil || r.ID() != "sni-db.example.com" {
		t.Fatalf("an SNI route: %+v %v", r, err)
	}
	if _, _, err := s.AddAlias(ctx, &bob, "bobco", "web", "db.example.com"); !IsKind(err, Conflict) {
		t.Errorf("an alias on a name another app's SNI route holds: %v", err)
	}
	if app, err := s.Scale(ctx, &alice, "acme", "blog", apitypes.ScaleRequest{Min: ptr(1), Max: ptr(4), Target: ptr(8)}); err != nil || app.MaxGears != 4 || app.TargetConns != 8 {
		t.Errorf("scale: %+v %v", app, err)
	}
}

func second3[A, B any](_ A, _ B, err error) error { return err }

func ptr(n int) *int { return &n }

func secondCart(s *Service, ctx context.Context, u *store.User) error {
	if _, err := s.AddCartridge(ctx, u, "acme", "blog", "redis"); err != nil {
		return err
	}
	_, err := s.AddCartridge(ctx, u, "acme", "blog", "redis")
	return err
}

func (f *fakeAgent) Evacuate(context.Context, string, string, io.Writer) (int, error) { return 0, nil }
func (f *fakeAgent) RunCommand(context.Context, string, string, bool, io.Writer) (string, int, error) {
	return "", 0, nil
}

// gantry ps scale: every count is checked before any changes, the
// workers together within --max-gears, another user's app invisible.
func TestScaleProcessesRules(t *testing.T) {
	s, ag, _, alice, bob := appService(t)
	ctx := context.Background()
	app, _, err := s.CreateApp(ctx, &alice, "acme", apitypes.CreateAppRequest{Name: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	s.st.Update(func(tx *store.Tx) error {
		app.ActiveDeployment = "d1"
		tx.Put(app.Key(), app)
		return tx.Put(store.DeploymentKey(app.ID, "d1"), &store.Deployment{ID: "d1", AppID: app.ID, Processes: map[string]string{"worker": "w", "clock": "c"}})
	})
	for counts, want := range map[string]string{
		"worker=10 clock=10": "workers would run 20 gears together",
		"worker=17":          "beyond this platform's --max-gears (16)",
		"mailer=1":           `no process type "mailer": its Procfile has web, clock, worker`,
		"worker=-1":          "a count is 0 or more",
		"web=0":              "stop the app",
	} {
		req := apitypes.FormationRequest{Processes: map[string]int{}}
		for _, c := range strings.Fields(counts) {
			k, v, _ := strings.Cut(c, "=")
			n, _ := strconv.Atoi(v)
			req.Processes[k] = n
		}
		ag.calls = nil
		if _, err := s.ScaleProcesses(ctx, &alice, "acme", "jobs", req); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", counts, err, want)
		}
		if len(ag.calls) != 0 {
			t.Errorf("%s changed something: %v", counts, ag.calls)
		}
	}
	if _, err := s.ScaleProcesses(ctx, &bob, "acme", "jobs", apitypes.FormationRequest{Processes: map[string]int{"worker": 2}}); err == nil {
		t.Error("bob scaled alice's app")
	}
	if _, err := s.ScaleProcesses(ctx, &alice, "acme", "jobs", apitypes.FormationRequest{Processes: map[string]int{"worker": 3, "clock": 1}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ag.calls, ";"); got != "scale apps/acme/jobs clock=1;scale apps/acme/jobs worker=3" {
		t.Errorf("calls %q", got)
	}
}
