package store

import (
	"fmt"
	"time"
)

// User is a person with API tokens and SSH keys. Key: users/NAME.
type User struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Created time.Time `json:"created"`
}

// Token is an API token, stored by the SHA-256 of its secret. Key:
// tokens/HASH. The secret itself is never stored.
type Token struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	// Name says what the token is for (tokens made in the console).
	Name string `json:"name,omitempty"`
	// Session marks the token of a sign-in to the console: it Expires,
	// and signing out everywhere removes it.
	Session bool      `json:"session,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

// Password is a user's console password as an argon2id hash (PHC
// string). Key: passwords/NAME.
type Password struct {
	User string    `json:"user"`
	Hash string    `json:"hash"`
	Set  time.Time `json:"set"`
}

// PasswordKey is the store key of a user's password.
func PasswordKey(user string) string { return "passwords/" + user }

// SSHKey is a user's public key. Key: sshkeys/FINGERPRINT (SHA256:...).
type SSHKey struct {
	User        string    `json:"user"`
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Type        string    `json:"type"`
	Authorized  string    `json:"authorized"` // one authorized_keys line
	Created     time.Time `json:"created"`
}

// Domain is a user's namespace for apps. Key: domains/NAME.
type Domain struct {
	Name    string    `json:"name"`
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
}

// App is an application in a domain. Key: apps/DOMAIN/NAME.
type App struct {
	ID     string `json:"id"` // stable for the app's life; names its directories
	Name   string `json:"name"`
	Domain string `json:"domain"`
	Owner  string `json:"owner"`
	Type   string `json:"type"` // cartridge chosen at creation
	Host   string `json:"host"` // canonical hostname
	// Scale is how many gears run when the app is started.
	Scale int `json:"scale"`
	// Stopped is the user's wish: a stopped app runs no gears.
	Stopped          bool              `json:"stopped"`
	Branch           string            `json:"branch"`
	Env              map[string]string `json:"env,omitempty"`
	ActiveDeployment string            `json:"active_deployment,omitempty"`
	KeepDeployments  int               `json:"keep_deployments"`
	// GearSize names the gears' limits: small, medium, large.
	GearSize string `json:"gear_size,omitempty"`
	// UID is the Unix user the app's gears run as in namespace mode (0:
	// not assigned yet).
	UID int `json:"uid,omitempty"`
	// Automatic scaling: MinGears <= gears <= MaxGears (equal: fixed),
	// TargetConns concurrent connections per gear (0: 16).
	MinGears    int `json:"min_gears,omitempty"`
	MaxGears    int `json:"max_gears,omitempty"`
	TargetConns int `json:"target_connections,omitempty"`
	// IdleAfter idles the app (zero gears) after that long without
	// traffic; 0 never. Idle is set while it is idled.
	IdleAfter time.Duration `json:"idle_after,omitempty"`
	Idle      bool          `json:"idle,omitempty"`
	// Formation is how many gears each non-web process type runs (a type
	// new in a deployment starts with 1).
	Formation map[string]int `json:"formation,omitempty"`
	// StopGrace is how long a gear's process has to exit after SIGTERM
	// before it is killed (0: DefaultStopGrace).
	StopGrace time.Duration `json:"stop_grace,omitempty"`
	// Registry is the login to the registry of the app's image, if any.
	Registry *RegistryLogin `json:"registry,omitempty"`
	// Backups, when set, saves snapshots of the app on a schedule.
	Backups *BackupSchedule `json:"backups,omitempty"`
	// Drains ship the app's log lines elsewhere (syslog, HTTPS).
	Drains []Drain `json:"drains,omitempty"`
	// Cartridges are the add-on services (postgresql, redis) of the app.
	Cartridges []Cartridge `json:"cartridges,omitempty"`
	// Egress is the app's outbound rules, in order (first match wins).
	Egress []EgressRule `json:"egress,omitempty"`
	// EgressBlocked cuts the app's outbound traffic (a flagged port scan)
	// until an operator clears it.
	EgressBlocked bool `json:"egress_blocked,omitempty"`
	// EgressRouter, when set, binds the app to the egress router: its
	// gears leave only through it.
	EgressRouter *EgressRouter `json:"egress_router,omitempty"`
	// HTTPS is allow (default), redirect or off.
	HTTPS string `json:"https,omitempty"`
	// Router timeouts; 0 is the router's default.
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
	ReadTimeout    time.Duration `json:"read_timeout,omitempty"`   // waiting for the app's response headers
	TunnelTimeout  time.Duration `json:"tunnel_timeout,omitempty"` // idle WebSocket and TCP connections
	Created        time.Time     `json:"created"`
}

// Cartridge is an add-on service of an app with its credentials.
type Cartridge struct {
	Name     string    `json:"name"`
	User     string    `json:"user,omitempty"`
	Password string    `json:"password"`
	Database string    `json:"database,omitempty"`
	Created  time.Time `json:"created"`
}

// DefaultStopGrace is how long a process has after SIGTERM unless the app
// says otherwise (Heroku's 30 s).
const DefaultStopGrace = 30 * time.Second

// Grace is the app's stop grace time.
func (a *App) Grace() time.Duration {
	if a.StopGrace > 0 {
		return a.StopGrace
	}
	return DefaultStopGrace
}

// Key returns the app's store key.
func (a *App) Key() string { return AppKey(a.Domain, a.Name) }

// FullName is DOMAIN/NAME, how logs and errors name an app.
func (a *App) FullName() string { return a.Domain + "/" + a.Name }

// AppKey is the store key of an app.
func AppKey(domain, name string) string { return "apps/" + domain + "/" + name }

// Host reserves a hostname for one app platform-wide. Key: hosts/HOSTNAME.
type Host struct {
	Name   string `json:"name"`
	AppKey string `json:"app_key"`
}

// Deployment is one build of one commit. Key: deployments/APPID/ID.
type Deployment struct {
	ID      string `json:"id"`
	AppID   string `json:"app_id"`
	Commit  string `json:"commit"`
	Type    string `json:"cartridge"` // the app type (nodejs, go…); the key predates the word
	Command string `json:"command"`   // the web process command
	// Processes are the Procfile's other process types (workers), name to
	// command; they run without a route.
	Processes map[string]string `json:"processes,omitempty"`
	// Image, when set, is the image the deployment runs (Dir/rootfs holds
	// its filesystem) instead of a built tree.
	Image *Image `json:"image,omitempty"`
	// Cron is the deployment's scheduled jobs (app.json's cron and
	// .openshift/cron/PERIOD/ executables).
	Cron   []CronJob `json:"cron,omitempty"`
	Health string    `json:"health_path"` // optional HTTP path checked before routing
	Dir    string    `json:"dir"`         // built tree on disk
	// Runtime is the language version it was built with and runs on
	// ("" : none chosen): its binaries' directory, and its tree when it
	// comes from the runtimes directory (mounted into gears).
	Runtime     string `json:"runtime,omitempty"`
	RuntimeBin  string `json:"runtime_bin,omitempty"`
	RuntimeRoot string `json:"runtime_root,omitempty"`
	// Node is the machine that built it (and has its tree first).
	Node string `json:"node,omitempty"`
	// Artifact is the SHA-256 of its packed tree (in a cluster): the
	// machines that run it fetch it by that name and check it.
	Artifact string    `json:"artifact,omitempty"`
	Created  time.Time `json:"created"`
}

// DeploymentKey is the store key of a deployment.
func DeploymentKey(appID, id string) string { return "deployments/" + appID + "/" + id }

// Gear states.
const (
	GearStarting = "starting" // started, not yet routed
	GearRunning  = "running"  // routed
	GearDraining = "draining" // unrouted, finishing open connections
	GearStopped  = "stopped"
	// GearOneOff is a gear for one command (`gantry run`): the app's code,
	// env and isolation, never routed, scaled or replaced by a deploy;
	// removed when the command ends.
	GearOneOff = "oneoff"
	// GearStandby is a web gear made ahead of an idle app's wake
	// (namespaced, on one machine): its container waits for its address,
	// its app has not started. Never routed or counted; the wake gives it
	// its address.
	GearStandby = "standby"
)

// Gear is one running instance of an app. Key: gears/ID.
type Gear struct {
	ID         string `json:"id"`
	AppID      string `json:"app_id"`
	AppKey     string `json:"app_key"`
	Deployment string `json:"deployment"`
	IP         string `json:"ip"`
	Port       int    `json:"port"`
	State      string `json:"state"`
	Isolation  string `json:"isolation"` // process or namespaces
	// Service names the cartridge a gear runs; "" for the app's own code.
	Service string `json:"service,omitempty"`
	// Process is the Procfile process type of an app gear ("": web). Only
	// web gears are routed and autoscaled; deploys replace every type.
	Process string `json:"process,omitempty"`
	// Node is the machine that runs the gear ("" in records older than
	// nodes: the one machine there was).
	Node    string    `json:"node,omitempty"`
	Created time.Time `json:"created"`
}

// Web reports whether the gear runs the app's web process (routed).
func (g *Gear) Web() bool { return g.Service == "" && g.Process == "" && g.State != GearOneOff }

// Worker reports whether the gear runs one of the app's other process
// types (a Procfile worker).
func (g *Gear) Worker() bool { return g.Service == "" && g.Process != "" && g.State != GearOneOff }

// Kind names what the gear runs: web, a process type, run (a one-off) or
// its cartridge.
func (g *Gear) Kind() string {
	switch {
	case g.Service != "":
		return g.Service
	case g.State == GearOneOff:
		if g.Process != "" {
			return g.Process // cron, release
		}
		return "run"
	case g.Process != "":
		return g.Process
	}
	return "web"
}

// Endpoint is where the router reaches the gear.
func (g *Gear) Endpoint() string { return fmt.Sprintf("%s:%d", g.IP, g.Port) }

// GearKey is the store key of a gear.
func GearKey(id string) string { return "gears/" + id }

// Autoscaled reports whether the autoscaler manages the app's gear count.
func (a *App) Autoscaled() bool { return a.MaxGears > a.MinGears }

// Event is a scale, idle or wake decision with its reason. Key:
// events/APPID/TIME (nanoseconds, zero-padded: keys sort by time).
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // scale_up, scale_down, idle, wake, wake_failed, manual
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// EventKey is the store key of an app's event at t.
func EventKey(appID string, t time.Time) string {
	return fmt.Sprintf("events/%s/%020d", appID, t.UnixNano())
}

// HTTPS modes of an app.
const (
	HTTPSAllow    = "allow"    // http and https both served (default)
	HTTPSRedirect = "redirect" // http redirects to https
	HTTPSOff      = "off"      // https redirects to http
)

// Alias is a custom hostname routed to an app. Key: aliases/HOSTNAME. Its
// hostname is reserved in hosts/ like a canonical name.
type Alias struct {
	Host    string    `json:"host"`
	AppKey  string    `json:"app_key"`
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
}

// AliasKey is the store key of an alias.
func AliasKey(host string) string { return "aliases/" + host }

// Cert is the certificate served for an alias. Key: certs/HOSTNAME. The
// key is kept unencrypted (the store is readable by root only) and never
// leaves the server.
type Cert struct {
	Host     string    `json:"host"`
	AppKey   string    `json:"app_key"`
	Source   string    `json:"source"` // upload or acme
	CertPEM  string    `json:"cert_pem"`
	KeyPEM   string    `json:"key_pem"`
	Names    []string  `json:"names"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	Forced   bool      `json:"forced,omitempty"` // accepted with --force (untrusted chain)
	Updated  time.Time `json:"updated"`
}

// CertKey is the store key of an alias's certificate.
func CertKey(host string) string { return "certs/" + host }

// TCPRoute exposes a gear port as raw TCP: on a platform port, or on the
// TLS port by SNI without terminating TLS (passthrough). Key:
// tcproutes/port-N or tcproutes/sni-HOST.
type TCPRoute struct {
	AppKey     string    `json:"app_key"`
	Port       int       `json:"port,omitempty"`
	SNI        string    `json:"sni,omitempty"`
	TargetPort int       `json:"target_port,omitempty"` // 0: the gear's web port
	Created    time.Time `json:"created"`
}

// Key is the route's store key.
func (r *TCPRoute) Key() string {
	if r.SNI != "" {
		return "tcproutes/sni-" + r.SNI
	}
	return fmt.Sprintf("tcproutes/port-%d", r.Port)
}

// EgressRouter is how an app uses the egress router: the HTTP proxy with
// its ACL, redirects (L4, to fixed targets) and TCP proxies.
type EgressRouter struct {
	Proxy     bool             `json:"proxy,omitempty"`
	ACL       []string         `json:"acl,omitempty"`
	Redirects []EgressRedirect `json:"redirects,omitempty"`
	TCP       []EgressTCP      `json:"tcp,omitempty"`
}

// Empty says the app no longer uses the router (and is not bound to it).
func (r *EgressRouter) Empty() bool {
	return r == nil || !r.Proxy && len(r.Redirects) == 0 && len(r.TCP) == 0
}

// EgressRedirect sends the gears' connections to Match (HOST:PORT,
// CIDR:PORT or *:PORT) to Target through the router.
type EgressRedirect struct {
	Match  string `json:"match"`
	Target string `json:"target"`
}

// EgressTCP is a TCP proxy: the router listens on Port (on the gear
// network's gateway) and forwards to Targets, round-robin over the
// healthy ones.
type EgressTCP struct {
	Port    int      `json:"port"`
	Targets []string `json:"targets"`
}

// EgressRule is one outbound rule as the user wrote it.
type EgressRule struct {
	Action string `json:"action"` // allow or deny
	Rule   string `json:"rule"`
}

// NameClaim says a user may use a DNS name and every name under it as
// aliases: proven by a TXT record, or granted by an admin. Key:
// claims/NAME.
type NameClaim struct {
	Name     string    `json:"name"`
	Owner    string    `json:"owner"`
	Method   string    `json:"method"` // dns or admin
	Verified time.Time `json:"verified"`
}

// ClaimKey is the store key of a name claim.
func ClaimKey(name string) string { return "claims/" + name }

// Formation is how many gears each of dep's non-web process types runs
// for app: its recorded count, 1 for a type new in dep.
func Formation(app *App, dep *Deployment) map[string]int {
	out := map[string]int{}
	for proc := range dep.Processes {
		n, ok := app.Formation[proc]
		if !ok {
			n = 1
		}
		out[proc] = n
	}
	return out
}

// Short reports whether a running app has fewer gears than it should of
// its active deployment dep: web gears below its scale (unless idle), or
// gears of a process type below its formation. Starting gears count.
func Short(app *App, dep *Deployment, gears []Gear) bool {
	if app.Stopped || app.ActiveDeployment == "" {
		return false
	}
	have := map[string]int{}
	for _, g := range gears {
		if g.AppKey == app.Key() && (g.Web() || g.Worker()) && (g.State == GearRunning || g.State == GearStarting) {
			have[g.Process]++
		}
	}
	if !app.Idle && have[""] < app.Scale {
		return true
	}
	for proc, n := range Formation(app, dep) {
		if have[proc] < n {
			return true
		}
	}
	return false
}

// CronJob is one scheduled command of a deployment.
type CronJob struct {
	// ID names the job: a hash of its schedule and command, stable across
	// deployments that keep it.
	ID       string `json:"id"`
	Schedule string `json:"schedule"` // five fields, or @hourly…
	Command  string `json:"command"`  // run with sh -c in the tree
	Source   string `json:"source"`   // app.json, or the executable's path
}

// CronStatus is what the last runs of an app's cron job did. Key:
// cron/APPID/JOBID.
type CronStatus struct {
	Job      string        `json:"job"`
	Last     time.Time     `json:"last,omitzero"`     // when the last run started
	Took     time.Duration `json:"took,omitempty"`    // how long it ran
	Exit     int           `json:"exit"`              // its exit status
	Error    string        `json:"error,omitempty"`   // why it could not run
	Gear     string        `json:"gear,omitempty"`    // the gear it ran in
	Running  bool          `json:"running,omitempty"` // a run is going now
	Runs     int           `json:"runs"`
	Failures int           `json:"failures"`
	// Skipped counts the times it was due while a run was still going.
	Skipped     int       `json:"skipped,omitempty"`
	LastSkipped time.Time `json:"last_skipped,omitzero"`
}

// CronKey is the store key of an app's cron job status.
func CronKey(appID, job string) string { return "cron/" + appID + "/" + job }

// Drain ships an app's log lines to a syslog server or an HTTPS endpoint.
type Drain struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"` // sealed at rest: it may carry a token
	Created time.Time `json:"created"`
}

// Image is what an image says about running it.
type Image struct {
	Ref        string   `json:"ref"`
	Digest     string   `json:"digest"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkDir    string   `json:"workdir,omitempty"`
	// User is the image's numeric user (0 when it runs as root, as most
	// images do); gears map it onto the app's own user.
	User int `json:"user"`
	// Port is the one TCP port the image exposes (0: none or several, and
	// $PORT decides).
	Port int `json:"port,omitempty"`
}

// Args is the command an image runs: Entrypoint then Cmd.
func (c Image) Args() []string { return append(append([]string(nil), c.Entrypoint...), c.Cmd...) }

// RegistryLogin is an app's login to the registry of its image.
type RegistryLogin struct {
	Registry string `json:"registry"` // host[:port]
	Username string `json:"username"`
	Password string `json:"password"` // sealed at rest
}

// SnapshotRecord is a snapshot of an app, kept in the backup repository
// (restic's snapshot ID). Key: snapshots/APPID/ID.
type SnapshotRecord struct {
	ID         string    `json:"id"`
	AppID      string    `json:"app_id"`
	Time       time.Time `json:"time"`
	Size       int64     `json:"size"`  // bytes read
	Added      int64     `json:"added"` // bytes new to the repository
	Holds      []string  `json:"holds"` // repository, data, postgresql…
	Deployment string    `json:"deployment,omitempty"`
	Commit     string    `json:"commit,omitempty"`
	// Repo is the backup target it was saved to ("": the default).
	Repo string `json:"repo,omitempty"`
}

// SnapshotKey is the store key of an app's snapshot record.
func SnapshotKey(appID, id string) string { return "snapshots/" + appID + "/" + id }

// BackupTarget is where the platform keeps its snapshots (a restic
// repository) and how it opens it: one record for every machine of a
// cluster. Key: backup/target.
type BackupTarget struct {
	Location string `json:"location"`
	Password string `json:"password"` // sealed at rest
	// SSHKey is the platform's identity for SFTP targets (OpenSSH PEM,
	// sealed), KnownHosts the SFTP server's host key once first met.
	SSHKey     string    `json:"ssh_key"`
	KnownHosts string    `json:"known_hosts,omitempty"`
	Set        time.Time `json:"set"`
	By         string    `json:"by,omitempty"`
}

// BackupTargetKey is the store key of the platform's backup target.
func BackupTargetKey() string { return "backup/target" }

// RestoreJournal is a restore under way: written once the snapshot is read
// back and verified, before anything of the app changes, removed when it
// is done. A server that starts and finds one finishes it (in place) or
// removes the half-made app (a new app), so an app is never left half
// restored. Key: restores/APPID.
type RestoreJournal struct {
	AppID    string `json:"app_id"`
	AppKey   string `json:"app_key"`
	Snapshot string `json:"snapshot"`
	// NewApp: the restore made the app (--to, import).
	NewApp bool `json:"new_app,omitempty"`
	// Dir holds what was read back: snapshot/ (its own files) and data/.
	Dir     string    `json:"dir"`
	Node    string    `json:"node"`
	Step    string    `json:"step,omitempty"` // the data swap's phase
	User    string    `json:"user"`
	Started time.Time `json:"started"`
}

// RestoreKey is the store key of an app's restore under way.
func RestoreKey(appID string) string { return "restores/" + appID }

// BackupSchedule saves an app's snapshots every so often and keeps some
// (restic's forget policy: the last N, one a day for N days, …).
type BackupSchedule struct {
	Every       time.Duration `json:"every"`
	KeepLast    int           `json:"keep_last,omitempty"`
	KeepDaily   int           `json:"keep_daily,omitempty"`
	KeepWeekly  int           `json:"keep_weekly,omitempty"`
	KeepMonthly int           `json:"keep_monthly,omitempty"`
	Last        time.Time     `json:"last,omitzero"` // the last attempt
	LastError   string        `json:"last_error,omitempty"`
}
