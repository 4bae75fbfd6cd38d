// Package api is Gantry's REST/JSON API: users, SSH keys, domains, apps,
// environment, logs and deployments, with an OpenAPI 3.1 document generated
// from the handlers (huma), an offline docs page with try-it, problem+json
// errors with stable codes, and bearer-token auth on every endpoint but the
// health check. It also serves git over smart HTTP for pushes behind
// firewalls. A user sees and changes only their own domains and apps.
//
// The API turns intent into store writes and asks the agent and the builder
// to act; it does not run processes itself.
package api

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/node/runtimes"

	"github.com/gantry-paas/gantry/internal/control/service"
	"github.com/gantry-paas/gantry/internal/control/stats"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/coder/websocket"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/wstunnel"
)

// Agent is what the API asks of the agent.
type Agent interface {
	Rollout(ctx context.Context, appKey, depID string, out io.Writer) error
	Stop(ctx context.Context, appKey string) error
	Delete(ctx context.Context, appKey string) error
	Status(gearID string) GearStatus
	Resize(ctx context.Context, appKey string) error
	Isolation() string
	ScaleTo(ctx context.Context, appKey string, n int, out io.Writer) error
	ScaleProcess(ctx context.Context, appKey, proc string, n int, out io.Writer) error
	Services(appKey, gearID string) ([]apitypes.ServiceView, error)
	AddCartridge(ctx context.Context, appKey string, c store.Cartridge) (ip string, port int, err error)
	RemoveCartridge(ctx context.Context, appKey, name string) error
	CartridgeAddress(appKey, name string) (ip string, port int, ok bool)
	// PrepareAppDir makes an app's directory (its own disk, when the
	// platform limits disks); RemoveAppDir deletes it.
	PrepareAppDir(app *store.App) error
	RemoveAppDir(app *store.App) error
	PurgeCache(app *store.App) (int64, error)
	// DiskUsage is what the app stores and its limit (0: none).
	DiskUsage(app *store.App) (used, limit int64)
}

// Concurrency reads an app's live connections (the router).
type Concurrency interface {
	Concurrency(appKey string) int
}

// GearStatus is a gear's process status as the agent sees it.
type GearStatus struct {
	PID      int
	Status   string
	Restarts int
	LastExit string
	Memory   int64
	CPU      time.Duration
	OOMKills int
}

// Builder is what the API asks of the builder.
type Builder interface {
	Deploy(ctx context.Context, appKey, commit string, gitEnv []string, out io.Writer) error
	GrantPush(user, appKey string) (env []string, release func())
}

// Options configure the API.
type Options struct {
	// Runtimes, if set, lists the language runtimes builds choose from.
	Runtimes func() ([]runtimes.Runtime, []error)
	// Service holds the domain operations the API maps onto (required).
	Service *service.Service
	// Doctor checks the host (gantry admin doctor); nil: not offered.
	Doctor func() []apitypes.DoctorCheck
	// MigrateStore moves a machine that runs alone to etcd, live (a new
	// process takes over); nil: not offered.
	MigrateStore func(ctx context.Context, req apitypes.StoreMigrateRequest) (*apitypes.StoreMigrateView, error)
	Layout       layout.Layout
	Log          *slog.Logger
	Agent        Agent
	Builder      Builder
	// CloudDomain is the suffix of canonical app hostnames.
	CloudDomain string
	// AppURL, GitSSHURL and GitHTTPURL render an app's addresses.
	AppURL     func(host string) string
	GitSSHURL  func(domain, app string) string
	GitHTTPURL func(domain, app string) string
	// SSHHostKeys are the SSH endpoint's public host keys in
	// known_hosts form ("[host]:port type base64"), for clients to trust.
	SSHHostKeys []string
	Version     string
	// Router serves the apps' live connections.
	Router Concurrency
	// Metrics, if set, is served at /metrics to admins.
	Metrics http.Handler
	// Stats, if set, is the recent traffic of apps (the console's charts).
	Stats *stats.History
	// Exec, if set, serves the console's terminal in a gear.
	Exec GearExec
	// Tunnels, if set, serves `port-forward --via https`.
	Tunnels ServiceDialer
	// RemoteLogs, in a cluster, reads the logs of the app's gears on the
	// other machines.
	RemoteLogs RemoteLogs
	// JoinURL is where machines join (shown with join tokens).
	JoinURL string
	// CAView is the platform root, served at /v1/ca.
	CAView *apitypes.CAView
	// PublicHost is how clients reach TCP routes; HTTPSPort is the
	// router's TLS port (0: none).
	PublicHost string
	HTTPSPort  int
	// ACME says aliases without an uploaded certificate get one by ACME.
	ACME bool
	// TCPPorts reports TCP route ports the router could not bind.
	TCPPorts TCPPorts
	// Egress, if set, serves the apps' outbound policies.
	Egress Egress
	// EgressRouter, if set, is the egress router (isolated gears only).
	EgressRouter EgressRouter
}

// RemoteLogs reads an app's gear logs on the other machines of a cluster:
// their last n lines, or new lines until ctx ends.
type RemoteLogs interface {
	Tail(ctx context.Context, appID string, n int) []applog.Line
	Follow(ctx context.Context, appID string, fn func(applog.Line) error)
}

// ServiceDialer connects to a service of a user's gear, refusing anything
// else (the agent).
type ServiceDialer interface {
	DialService(user, addr string) (net.Conn, any, error)
}

// API serves the REST API.
type API struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
	h   huma.API
}

type ctxKey int

const (
	userKey ctxKey = iota
	// bodyKey holds the request body of operations that read it as a
	// stream (an imported archive), not as JSON.
	bodyKey
	// tokenKey holds the caller's token (signing out ends it), addrKey
	// the client's address (sign-in failures are counted by it).
	tokenKey
	addrKey
)

//go:embed docsui
var docsUI embed.FS

var setErrorsOnce sync.Once

// New builds the API and registers every operation.
func New(o Options) (*API, error) {
	if o.Service == nil || o.Agent == nil || o.Builder == nil || o.AppURL == nil || o.GitSSHURL == nil || o.GitHTTPURL == nil {
		return nil, errors.New("api: Service, Agent, Builder and URL functions are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	setErrorsOnce.Do(func() { huma.NewError = newProblem })
	a := &API{o: o, log: o.Log.With("component", "api"), mux: http.NewServeMux()}
	cfg := huma.DefaultConfig("Gantry API", o.Version)
	cfg.Info.Description = "Manage users, SSH keys, domains, apps, their environment, logs and deployments. " +
		"Every endpoint but /healthz takes `Authorization: Bearer TOKEN`; `gantry user create` prints a token."
	cfg.DocsPath = "" // served below, offline
	cfg.OpenAPIPath = "/openapi"
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "An API token from `gantry user create` or the bootstrap config."},
	}
	a.h = humago.New(a.mux, cfg)
	a.h.UseMiddleware(a.authenticate)
	a.registerUsers()
	a.registerDomains()
	a.registerApps()
	a.registerDeployments()
	a.registerLogs()
	a.registerScaling()
	a.registerServices()
	a.registerCartridges()
	a.registerDrains()
	a.registerImages()
	a.registerSnapshots()
	a.registerSessions()
	a.registerStats()
	a.registerRouting()
	a.registerClaims()
	a.registerEgress()
	a.registerNodes()
	a.registerJoin()
	a.mux.HandleFunc("GET /docs", a.docs)
	a.mux.Handle("GET /docs/", http.StripPrefix("/docs/", http.FileServerFS(mustSub(docsUI, "docsui"))))
	a.mux.HandleFunc("/git/", a.gitHTTP)
	if o.Metrics != nil {
		a.mux.HandleFunc("GET /metrics", a.metrics)
	}
	if o.Tunnels != nil {
		a.mux.HandleFunc("GET /v1/tunnel", a.tunnel)
	}
	if o.Exec != nil {
		a.mux.HandleFunc("GET /v1/domains/{domain}/apps/{app}/exec", a.exec)
	}
	a.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/docs", http.StatusFound)
	})
	return a, nil
}

// ServeHTTP serves the API, with protection against cross-origin form posts.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mux.ServeHTTP(w, r)
}

// OpenAPI returns the generated document.
func (a *API) OpenAPI() *huma.OpenAPI { return a.h.OpenAPI() }

var bearer = []map[string][]string{{"bearer": {}}}

// authenticate checks the bearer token of every operation that declares
// security and puts the user in the context.
func (a *API) authenticate(ctx huma.Context, next func(huma.Context)) {
	if ctx.Operation().OperationID == "join" && ctx.TLS() == nil {
		// The answer holds the platform's keys.
		huma.WriteErr(a.h, ctx, http.StatusForbidden, "machines join over HTTPS only: use --join https://…")
		return
	}
	if len(ctx.Operation().Security) == 0 {
		host, _, err := net.SplitHostPort(ctx.RemoteAddr())
		if err != nil {
			host = ctx.RemoteAddr()
		}
		next(huma.WithValue(ctx, addrKey, host))
		return
	}
	tok, ok := strings.CutPrefix(ctx.Header("Authorization"), "Bearer ")
	if !ok || tok == "" {
		ctx.SetHeader("WWW-Authenticate", `Bearer realm="gantry"`)
		huma.WriteErr(a.h, ctx, http.StatusUnauthorized, "missing API token: send `Authorization: Bearer TOKEN` (the CLI does this after `gantry login`)")
		return
	}
	user, err := a.o.Service.UserByToken(strings.TrimSpace(tok))
	if errors.Is(err, store.ErrBusy) {
		ctx.SetHeader("Retry-After", "5")
		huma.WriteErr(a.h, ctx, http.StatusServiceUnavailable, a.internal("checking an API token", err).Detail)
		return
	}
	if err != nil {
		huma.WriteErr(a.h, ctx, http.StatusUnauthorized, "invalid API token: log in again with `gantry login --server URL --token TOKEN`")
		return
	}
	ctx = huma.WithValue(huma.WithValue(ctx, userKey, user), tokenKey, strings.TrimSpace(tok))
	if ctx.Operation().OperationID == "import-snapshot" {
		ctx = huma.WithValue(ctx, bodyKey, ctx.BodyReader())
	}
	next(ctx)
}

func userOf(ctx context.Context) *store.User {
	u, _ := ctx.Value(userKey).(*store.User)
	return u
}

func mustSub(f embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

const docsPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Gantry API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<style>body{margin:0} .topbar{display:none}</style></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#ui", deepLinking: true,
  tryItOutEnabled: true, persistAuthorization: true,
});
</script></body></html>
`

func (a *API) docs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
	fmt.Fprint(w, docsPage)
}

// metrics serves Prometheus metrics to admin tokens (scrape with
// `authorization: {credentials: TOKEN}`).
func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	u, err := a.o.Service.UserByToken(strings.TrimSpace(tok))
	if errors.Is(err, store.ErrBusy) {
		w.Header().Set("Retry-After", "5")
		http.Error(w, storeBusy().Detail, http.StatusServiceUnavailable)
		return
	}
	if err != nil || !u.Admin {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
		http.Error(w, "metrics need an admin API token", http.StatusUnauthorized)
		return
	}
	a.o.Metrics.ServeHTTP(w, r)
}

// tunnel serves one forwarded connection over a WebSocket
// (`gantry port-forward --via https`): addr=GEARIP:PORT of one of the
// caller's gear services, authenticated with the API token.
func (a *API) tunnel(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	u, err := a.o.Service.UserByToken(strings.TrimSpace(tok))
	if err != nil {
		http.Error(w, "invalid or missing API token", http.StatusUnauthorized)
		return
	}
	addr := r.URL.Query().Get("addr")
	conn, _, err := a.o.Tunnels.DialService(u.Name, addr)
	if err != nil {
		a.log.Warn("refused tunnel", "user", u.Name, "dest", addr, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	defer conn.Close()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	wstunnel.Relay(r.Context(), ws, conn)
}
