// Package service holds the platform's domain operations, apart from any
// protocol: users and their tokens and SSH keys, domains, the first admin,
// apps and their deployments, hostnames (aliases, DNS-name claims, the rule
// that keeps users' names apart), certificates, TCP routes, scaling and
// idling, cartridges, egress rules and the egress router's configuration.
// The API maps HTTP onto it and bootstrap calls it; it reads and writes the
// store and decides who may do what. Its errors carry a Kind (what went
// wrong, for the API's status) and a stable Code and a message that says
// what to do.
//
// The API's handlers map HTTP onto these and build the views.
package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/control/cron"
	"github.com/gantry-paas/gantry/internal/control/events"
	"github.com/gantry-paas/gantry/internal/keylock"
	"github.com/gantry-paas/gantry/internal/node/drain"

	"github.com/gantry-paas/gantry/internal/layout"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Kind is the class of a refusal.
type Kind int

const (
	Invalid   Kind = iota + 1 // the request is wrong
	NotFound                  // no such thing, or not the caller's
	Conflict                  // it exists already, or is in use
	Forbidden                 // the caller may not do this
	Failed                    // the platform tried and the app did not come up (nothing changed)
	Limited                   // too many attempts: wait
)

// Error is a refusal a user can act on.
type Error struct {
	Kind Kind
	Code string // stable, e.g. name_taken (apitypes.Code*)
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func refuse(k Kind, code, msg string) *Error { return &Error{Kind: k, Code: code, Msg: msg} }

// IsKind reports whether err is a refusal of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

// Agent is what the service asks of the machines' gears.
type Agent interface {
	Rollout(ctx context.Context, appKey, depID string, out io.Writer) error
	Stop(ctx context.Context, appKey string) error
	Delete(ctx context.Context, appKey string) error
	Resize(ctx context.Context, appKey string) error
	ScaleTo(ctx context.Context, appKey string, n int, out io.Writer) error
	ScaleProcess(ctx context.Context, appKey, proc string, n int, out io.Writer) error
	AddCartridge(ctx context.Context, appKey string, c store.Cartridge) (ip string, port int, err error)
	RemoveCartridge(ctx context.Context, appKey, name string) error
	CartridgeAddress(appKey, name string) (ip string, port int, ok bool)
	// PrepareAppDir makes an app's directory (its own disk, when the
	// platform limits disks); RemoveAppDir deletes it.
	PrepareAppDir(app *store.App) error
	RemoveAppDir(app *store.App) error
	// PurgeCache deletes the app's build cache, returning the bytes freed.
	PurgeCache(app *store.App) (int64, error)
	// Evacuate moves an app's web gears off a machine (drain).
	Evacuate(ctx context.Context, appKey, node string, out io.Writer) (int, error)
	// RunCommand runs a command in a one-off gear of the app: attached (its
	// output to out, its exit code back) or detached (at once).
	RunCommand(ctx context.Context, appKey, command string, detach bool, out io.Writer) (gearID string, code int, err error)
}

// Builder deploys a commit of an app.
type Builder interface {
	Deploy(ctx context.Context, appKey, commit string, gitEnv []string, out io.Writer) error
}

// ImageDeployer deploys images from registries.
type ImageDeployer interface {
	DeployImage(ctx context.Context, appKey, ref string, login *store.RegistryLogin, out io.Writer) error
}

// Options configure a Service. Store is required; the app operations also
// need Agent, Builder, Layout and Exe.
type Options struct {
	Store   *store.Store
	Log     *slog.Logger
	Agent   Agent
	Builder Builder
	Layout  layout.Layout
	// Exe is the gantry binary (the repositories' hook runs it).
	Exe string
	// CloudDomain names apps: NAME-DOMAIN.CLOUD_DOMAIN.
	CloudDomain string
	// MaxGears is the most gears one app may have (default 16).
	MaxGears int
	// Egress enforces outbound policies (nil: egress rules cannot change);
	// EgressRouter is the egress router (nil: there is none) and
	// EgressPorts opens the gateway to its ports as they are now.
	Egress       Egress
	EgressRouter EgressRouter
	EgressPorts  func() error
	// Events, if set, records manual scaling and idling.
	Events *events.Log
	// DrainStatus reports what this machine shipped to an app's drains;
	// DrainPolicy is where drains may connect, DrainTLS their trusted
	// roots (nil: the system's).
	DrainStatus func(appID string) map[string]drain.Status
	DrainPolicy drain.Policy
	DrainTLS    *tls.Config
	// Backups says where snapshots go until an admin sets a target (nil:
	// this server keeps none); MinBackupEvery the shortest schedule (0:
	// an hour; tests shorten it).
	Backups        *Backups
	MinBackupEvery time.Duration
	// Self is this machine's name (what it is doing is marked with it).
	Self string
	// Images deploys images (nil: this server cannot).
	Images ImageDeployer
	// Cron lists apps' scheduled jobs with their runs.
	Cron *cron.Scheduler
	// Hostnames: the platform's own (no alias may take them), whether
	// aliases need a claimed DNS name (VerifyAuto, VerifyDNS, VerifyOff),
	// the resolver that checks claims ("": the system's), the roots that
	// verify uploaded certificates (nil: the system's).
	PlatformHosts     []string
	AliasVerification string
	DNSResolver       string
	CertRoots         *x509.CertPool
	// ReservedPorts are the platform's own ports (no TCP route takes
	// them); HTTPSPort is 0 when there is no HTTPS (no SNI routes).
	ReservedPorts []int
	HTTPSPort     int
	// Cluster is the store's etcd (nil: SQLite, one machine); JoinFiles
	// are the files under the data directory a machine that joins gets.
	Cluster   Cluster
	JoinFiles []string
	// Applied, if set, is the router: changes of routing return once it
	// serves them.
	Applied interface {
		WaitApplied(ctx context.Context, rev int64) error
	}
}

// Service is the domain operations over one store.
type Service struct {
	o   Options
	st  *store.Store
	log *slog.Logger
	// snapshots serialises an app's snapshots and restores (one staging
	// directory per app).
	snapshots keylock.Locks
	// signIns limits failed console sign-ins.
	signIns signInLimit
	// reposReady are the backup repositories known to exist.
	reposReady sync.Map
}

// New returns a service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MaxGears == 0 {
		o.MaxGears = 16
	}
	return &Service{o: o, st: o.Store, log: o.Log.With("component", "service")}
}

// inForce waits (a bounded time) until the router serves the store as it
// is now.
func (s *Service) inForce(ctx context.Context) {
	if s.o.Applied == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.o.Applied.WaitApplied(ctx, s.st.Rev())
}
