package apitypes

import "time"

// DomainView is a domain as the API shows it.
type DomainView struct {
	Name    string    `json:"name"`
	Owner   string    `json:"owner"`
	Apps    int       `json:"apps"`
	Created time.Time `json:"created"`
}

// GearView is one gear of an app.
type GearView struct {
	ID         string  `json:"id"`
	Type       string  `json:"type" doc:"web, a Procfile process type (worker…), run (a one-off: gantry run), cron or release"`
	IP         string  `json:"ip"`
	Port       int     `json:"port"`
	State      string  `json:"state" doc:"starting, running, draining, stopped; standby: made ahead of an idle app's wake, its app not started"`
	Process    string  `json:"process" doc:"running, backoff (crashed, restarting), stopped, lost"`
	PID        int     `json:"pid,omitempty"`
	Restarts   int     `json:"restarts"`
	LastExit   string  `json:"last_exit,omitempty" doc:"why the process last stopped"`
	Deployment string  `json:"deployment"`
	Isolation  string  `json:"isolation" doc:"process: a plain process on loopback, without namespaces"`
	Node       string  `json:"node" doc:"the machine that runs it"`
	Memory     int64   `json:"memory_bytes,omitempty" doc:"memory its processes use now (namespaced gears)"`
	CPU        float64 `json:"cpu_seconds,omitempty" doc:"CPU time its processes used since it started (namespaced gears)"`
	OOMKills   int     `json:"oom_kills,omitempty" doc:"processes the kernel killed for exceeding the memory limit"`
}

// AppView is an app as the API shows it.
type AppView struct {
	Name             string          `json:"name"`
	Domain           string          `json:"domain"`
	Type             string          `json:"type"`
	URL              string          `json:"url"`
	GitURL           string          `json:"git_url" doc:"SSH clone URL"`
	GitHTTPURL       string          `json:"git_http_url" doc:"HTTP clone URL (password: your API token)"`
	State            string          `json:"state" doc:"running, stopped, or not_deployed"`
	Scale            int             `json:"scale"`
	GearSize         string          `json:"gear_size" doc:"small (512 MiB, 250 processes), medium (1 GiB), large (2 GiB)"`
	MinGears         int             `json:"min_gears" doc:"automatic scaling: fewest gears"`
	MaxGears         int             `json:"max_gears" doc:"automatic scaling: most gears (equal to min_gears: fixed)"`
	TargetConns      int             `json:"target_connections" doc:"concurrent connections per gear the autoscaler aims at"`
	IdleAfter        string          `json:"idle_after,omitempty" doc:"idle (zero gears) after this long without traffic"`
	Idle             bool            `json:"idle" doc:"scaled to zero; the next request wakes it"`
	Connections      int             `json:"connections" doc:"live connections: requests in flight, WebSockets, held requests"`
	DiskUsed         int64           `json:"disk_used_bytes" doc:"what the app stores (repository, deployments, data, caches, logs)"`
	DiskLimit        int64           `json:"disk_limit_bytes" doc:"its disk limit, by gear size (0: none on this platform)"`
	Cartridges       []CartridgeView `json:"cartridges" doc:"add-on services with their connection URLs"`
	HTTPSURL         string          `json:"https_url,omitempty"`
	HTTPS            string          `json:"https" doc:"allow (http and https), redirect (http goes to https), off (https goes to http)"`
	Aliases          []AliasView     `json:"aliases"`
	TCPRoutes        []TCPRouteView  `json:"tcp_routes"`
	ConnectTimeout   string          `json:"connect_timeout,omitempty"`
	ReadTimeout      string          `json:"read_timeout,omitempty"`
	TunnelTimeout    string          `json:"tunnel_timeout,omitempty"`
	Isolation        string          `json:"isolation" doc:"namespaces, or process (plain processes: sizes are not enforced)"`
	Branch           string          `json:"branch"`
	ActiveDeployment string          `json:"active_deployment,omitempty"`
	Deployed         time.Time       `json:"deployed,omitzero" doc:"when the active deployment was made"`
	Gears            []GearView      `json:"gears"`
	Formation        map[string]int  `json:"formation,omitempty" doc:"gears per non-web process type (Procfile workers)"`
	Processes        []string        `json:"processes,omitempty" doc:"the active deployment's process types, web first"`
	StopGrace        string          `json:"stop_grace" doc:"how long a process has after SIGTERM"`
	Backups          string          `json:"backups,omitempty" doc:"the backup schedule and retention, with the last run"`
	Created          time.Time       `json:"created"`
	DeployError      string          `json:"deploy_error,omitempty" doc:"set when creating the app could not deploy its starter code"`
}

// DeploymentView is one deployment.
type DeploymentView struct {
	ID        string    `json:"id"`
	Commit    string    `json:"commit"`
	Cartridge string    `json:"cartridge"`
	Runtime   string    `json:"runtime,omitempty" doc:"the language version it runs on, e.g. Node.js 22.4.1"`
	Created   time.Time `json:"created"`
	Active    bool      `json:"active"`
}

// CachePurge is what purging an app's build cache freed.
type CachePurge struct {
	Freed int64 `json:"freed_bytes" doc:"bytes the cache held"`
}

// RuntimeView is one language version builds can choose.
type RuntimeView struct {
	Language string `json:"language" doc:"nodejs, python or go"`
	Version  string `json:"version" doc:"what its binary reports, e.g. 22.4.1"`
	Source   string `json:"source" doc:"the tree in the runtimes directory, or host"`
}

// RuntimesView lists the runtimes and the runtimes directory's trees that
// are not runtimes.
type RuntimesView struct {
	Runtimes []RuntimeView `json:"runtimes"`
	Problems []string      `json:"problems,omitempty"`
}

// RunRequest runs a command in a one-off gear of an app.
type RunRequest struct {
	Command string `json:"command" doc:"run with /bin/sh -c in a fresh gear with the app's code and env"`
	Detach  bool   `json:"detach,omitempty" doc:"return at once; the output goes to the app's logs"`
}

// RunView is a one-off run: its gear, and (attached) its output and exit
// code.
type RunView struct {
	Gear      string `json:"gear"`
	Detached  bool   `json:"detached"`
	ExitCode  *int   `json:"exit_code,omitempty"`
	Output    string `json:"output,omitempty" doc:"stdout and stderr, the first MiB"`
	Truncated bool   `json:"truncated,omitempty"`
}

// CronView is one scheduled job of an app with its last run.
type CronView struct {
	ID       string     `json:"id"`
	Schedule string     `json:"schedule" doc:"five fields (UTC) or @hourly…"`
	Command  string     `json:"command"`
	Source   string     `json:"source" doc:"app.json, or the executable's path"`
	Next     *time.Time `json:"next,omitempty" doc:"when it runs next (none while the app is stopped)"`
	Last     *time.Time `json:"last,omitempty" doc:"when its last run started"`
	Running  bool       `json:"running"`
	Exit     *int       `json:"exit,omitempty" doc:"the last run's exit status"`
	Took     string     `json:"took,omitempty"`
	Gear     string     `json:"gear,omitempty"`
	Error    string     `json:"error,omitempty" doc:"why the last run could not start"`
	Runs     int        `json:"runs"`
	Failures int        `json:"failures"`
	Skipped  int        `json:"skipped" doc:"times it was due while a run was still going"`
}

// LogDrainView is one log drain of an app.
type LogDrainView struct {
	ID        string    `json:"id"`
	URL       string    `json:"url" doc:"its URL, with passwords and query values hidden"`
	Kind      string    `json:"kind" doc:"syslog, syslog+tls or https"`
	Created   time.Time `json:"created"`
	State     string    `json:"state" doc:"connecting, connected or retrying (as this machine ships)"`
	Sent      uint64    `json:"sent"`
	Dropped   uint64    `json:"dropped" doc:"lines dropped while the drain was down beyond its buffer, or refused by it"`
	Buffered  int       `json:"buffered"`
	LastError string    `json:"last_error,omitempty"`
}

// SnapshotView is one snapshot of an app.
type SnapshotView struct {
	ID         string    `json:"id"`
	ShortID    string    `json:"short_id"`
	Time       time.Time `json:"time"`
	Size       int64     `json:"size" doc:"bytes read for it"`
	Added      int64     `json:"added" doc:"bytes it added to the backup repository (deduplicated, compressed by restic)"`
	Holds      []string  `json:"holds" doc:"settings, repository, postgresql, data"`
	Deployment string    `json:"deployment,omitempty"`
	Commit     string    `json:"commit,omitempty"`
}

// RestoreView is an app made or put back from a snapshot, with what the
// caller should know (an alias now another app's, a TCP port taken…).
type RestoreView struct {
	App   AppView  `json:"app"`
	Notes []string `json:"notes"`
}

// BackupTargetView is where the platform keeps its snapshots.
type BackupTargetView struct {
	Location  string    `json:"location"`
	PublicKey string    `json:"public_key" doc:"the platform's SSH key for SFTP targets: authorize it on the server"`
	Set       time.Time `json:"set"`
	By        string    `json:"by,omitempty"`
}

// BackupCheckView is the result of checking the backup repository.
type BackupCheckView struct {
	OK     bool   `json:"ok"`
	Output string `json:"output" doc:"restic check's report"`
	Error  string `json:"error,omitempty"`
}

// BackupKeyView is the backup repository's password, for disaster
// recovery with stock restic.
type BackupKeyView struct {
	Repository string `json:"repository"`
	Key        string `json:"key"`
	Restore    string `json:"restore" doc:"how to restore without Gantry"`
}

// SessionView is a console session: its token (the cookie's value).
type SessionView struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// TokenView is an API token or console session (its secret only when
// just made).
type TokenView struct {
	ID      string    `json:"id" doc:"the first 12 hex digits of its SHA-256"`
	Name    string    `json:"name"`
	Session bool      `json:"session" doc:"a console sign-in"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Token   string    `json:"token,omitempty" doc:"the secret, shown once when made"`
}
