package apitypes

// Request bodies of the API's operations, shared by the server (huma reads
// their tags for validation and the OpenAPI document) and the client.

// CreateDomainRequest creates a domain.
type CreateDomainRequest struct {
	Name string `json:"name" doc:"Domain name: a DNS label, e.g. acme"`
}

// CreateAppRequest creates an app.
type CreateAppRequest struct {
	Name   string `json:"name" doc:"App name: a DNS label"`
	Type   string `json:"type,omitempty" enum:"nodejs,python,go,static" doc:"App type: the repository starts with starter code of this type, deployed at once. Without it the app is empty and the first push of any repository deploys it"`
	Scale  int    `json:"scale,omitempty" minimum:"0" maximum:"16" doc:"Gears to run (default 1)"`
	Branch string `json:"branch,omitempty" doc:"Branch that deploys (default main)"`
	Size   string `json:"gear_size,omitempty" enum:"small,medium,large" doc:"Gear size (default small)"`
	// Scalable starts with automatic scaling between 1 and 3 gears.
	Scalable bool `json:"scalable,omitempty" doc:"Scale automatically between 1 and 3 gears"`
	// Image runs an image from a registry instead of pushed code.
	Image            string `json:"image,omitempty" doc:"Run this image from a registry (e.g. registry.example.com/team/web:1.4) instead of pushed code; namespaced gears only"`
	RegistryUsername string `json:"registry_username,omitempty" doc:"Login to the image's registry (kept encrypted, reused by later deploys)"`
	RegistryPassword string `json:"registry_password,omitempty" doc:"Password or token of the registry login"`
}

// ImageRequest names an image to run, with the registry's login.
type ImageRequest struct {
	Image            string `json:"image,omitempty" doc:"Run this image from a registry (e.g. registry.example.com/team/web:1.4) instead of pushed code; namespaced gears only"`
	RegistryUsername string `json:"registry_username,omitempty" doc:"Login to the image's registry (kept encrypted, reused by later deploys)"`
	RegistryPassword string `json:"registry_password,omitempty" doc:"Password or token of the registry login"`
}

// DeployResult is an app after a deploy, with what the deploy said.
type DeployResult struct {
	App    AppView `json:"app"`
	Output string  `json:"output"`
}

// UpdateAppRequest changes an app's settings; empty fields stay as they are.
type UpdateAppRequest struct {
	Size           string `json:"gear_size,omitempty" enum:"small,medium,large" doc:"New gear size, applied to running gears at once"`
	HTTPS          string `json:"https,omitempty" enum:"allow,redirect,off" doc:"allow: http and https; redirect: http goes to https; off: https goes to http"`
	ConnectTimeout string `json:"connect_timeout,omitempty" doc:"How long the router tries to connect to a gear (e.g. 5s; default to reset)"`
	ReadTimeout    string `json:"read_timeout,omitempty" doc:"How long the app may take to start its response (e.g. 60s; default: no limit)"`
	TunnelTimeout  string `json:"tunnel_timeout,omitempty" doc:"Idle WebSocket and TCP connections close after this (default 1h)"`
	StopGrace      string `json:"stop_grace,omitempty" doc:"How long a gear's process has after SIGTERM before it is killed (default 30s)"`
	// A registry login for the app's images and its Dockerfile's base
	// images ("-" as the registry removes it).
	Registry         string `json:"registry,omitempty" doc:"Registry (host[:port]) of the app's images or its Dockerfile's base images; - removes the login"`
	RegistryUsername string `json:"registry_username,omitempty"`
	RegistryPassword string `json:"registry_password,omitempty"`
}

// EnvPatch sets and unsets an app's environment variables.
type EnvPatch struct {
	Set   map[string]string `json:"set,omitempty" doc:"Variables to set"`
	Unset []string          `json:"unset,omitempty" doc:"Variables to remove"`
}

// AddCartridgeRequest adds an add-on cartridge to an app.
type AddCartridgeRequest struct {
	Name string `json:"name" enum:"postgresql,redis" doc:"The cartridge"`
}

// ClaimRequest claims a DNS name.
type ClaimRequest struct {
	Name string `json:"name" doc:"a DNS name you control, e.g. example.com: it and every name under it become yours to use as aliases"`
}

// ClaimGrant gives a user a DNS name (admins).
type ClaimGrant struct {
	Name string `json:"name"`
	User string `json:"user"`
}

// EgressRulesRequest adds outbound rules.
type EgressRulesRequest struct {
	Action string   `json:"action" enum:"allow,deny"`
	Rules  []string `json:"rules" minItems:"1" doc:"labels (smtp), ports or ranges (6667, 8000-8100/tcp), CIDRs with optional port (198.51.100.0/24, 10.1.2.3/32:5432), hostnames, or all"`
	After  int      `json:"after,omitempty" doc:"insert after rule N (default: before all existing rules)"`
}

// EgressTestRequest asks what the policy does with a destination.
type EgressTestRequest struct {
	Destination string `json:"destination" doc:"HOST:PORT"`
	Protocol    string `json:"protocol,omitempty" enum:"tcp,udp" doc:"default tcp"`
}

// EgressProxyRequest sets the egress router's HTTP proxy ACL.
type EgressProxyRequest struct {
	ACL []string `json:"acl" minItems:"1" doc:"hostnames (api.example.com), wildcards (*.example.com: names under it), CIDRs or addresses, or all, each with an optional :PORT; a leading ! denies, and denials win"`
}

// EgressRedirectRequest adds an egress router redirect.
type EgressRedirectRequest struct {
	Match  string `json:"match" doc:"HOST:PORT, ADDRESS:PORT, CIDR:PORT or *:PORT (TCP)"`
	Target string `json:"target" doc:"HOST:PORT the router connects to"`
}

// AliasRequest adds an alias.
type AliasRequest struct {
	Host string `json:"host" doc:"Hostname, e.g. www.example.com (punycode for IDNs; *.example.com for a wildcard)"`
}

// TCPRouteRequest adds a TCP route.
type TCPRouteRequest struct {
	Port       int    `json:"port,omitempty" doc:"Platform port to listen on (1024-65535)"`
	SNI        string `json:"sni,omitempty" doc:"Instead of a port: TLS passthrough on the HTTPS port for this server name"`
	TargetPort int    `json:"target_port,omitempty" doc:"Port in each gear (default: the web port)"`
}

// ScaleRequest sets fixed or automatic scaling; nil fields stay.
type ScaleRequest struct {
	Gears  *int `json:"gears,omitempty" minimum:"1" doc:"Run exactly this many gears (no automatic scaling)"`
	Min    *int `json:"min,omitempty" doc:"Automatic scaling: fewest gears (0 lets the app idle)"`
	Max    *int `json:"max,omitempty" doc:"Automatic scaling: most gears"`
	Target *int `json:"target_connections,omitempty" doc:"Concurrent connections per gear to aim at (default 16)"`
}

// FormationRequest sets how many gears process types run (`gantry ps
// scale APP worker=3 web=2`).
type FormationRequest struct {
	Processes map[string]int `json:"processes" doc:"process type to gear count; web is the app's fixed web scale"`
}

// LogDrainRequest adds a log drain.
type LogDrainRequest struct {
	URL string `json:"url" doc:"syslog://HOST:514, syslog+tls://HOST:6514 or https://HOST/PATH"`
}

// BackupScheduleRequest sets an app's backup schedule and retention.
type BackupScheduleRequest struct {
	Every       string `json:"every,omitempty" doc:"save a snapshot this often, e.g. 24h"`
	KeepLast    int    `json:"keep_last,omitempty" doc:"keep the last N snapshots"`
	KeepDaily   int    `json:"keep_daily,omitempty" doc:"keep one a day for N days"`
	KeepWeekly  int    `json:"keep_weekly,omitempty" doc:"keep one a week for N weeks"`
	KeepMonthly int    `json:"keep_monthly,omitempty" doc:"keep one a month for N months"`
	Off         bool   `json:"off,omitempty" doc:"stop scheduled backups (the snapshots stay)"`
}

// BackupTargetRequest sets where the platform keeps its snapshots.
type BackupTargetRequest struct {
	Location string `json:"location" doc:"a directory, sftp://USER@HOST[:PORT]/PATH or rest:https://HOST/PATH"`
	Key      string `json:"key,omitempty" doc:"the password of a repository made elsewhere (default: the platform's key)"`
}

// IdleRequest sets or triggers idling.
type IdleRequest struct {
	After string `json:"after,omitempty" doc:"Idle after this long without traffic, e.g. 30m; off disables"`
	Now   bool   `json:"now,omitempty" doc:"Idle the app now"`
}

// CreateUserRequest creates a user (admins).
type CreateUserRequest struct {
	Name  string `json:"name" doc:"User name: lowercase letters, digits, hyphens"`
	Admin bool   `json:"admin,omitempty"`
}

// AddSSHKeyRequest adds an SSH key.
type AddSSHKeyRequest struct {
	Name string `json:"name,omitempty" doc:"A name for the key; defaults to its comment"`
	Key  string `json:"key" doc:"The public key, as in id_ed25519.pub"`
}

// CertUpload is an alias's own certificate.
type CertUpload struct {
	Certificate string `json:"certificate" doc:"PEM: the server certificate first, then its chain"`
	PrivateKey  string `json:"private_key" doc:"PEM private key (PKCS#1, PKCS#8 or SEC 1; may be encrypted)"`
	Passphrase  string `json:"passphrase,omitempty" doc:"Passphrase of an encrypted key (not stored: the key is kept decrypted, readable by the server only)"`
	Force       bool   `json:"force,omitempty" doc:"Accept a chain browsers will not trust (self-signed, private CA)"`
}

// EgressTCPRequest sets the targets of an egress router TCP proxy.
type EgressTCPRequest struct {
	Targets []string `json:"targets" minItems:"1" doc:"HOST:PORT destinations, round-robin over the healthy ones"`
}

// PasswordRequest sets a user's console password.
type PasswordRequest struct {
	Password string `json:"password" doc:"10 to 256 characters"`
}

// SignInRequest signs in to the console.
type SignInRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// TokenRequest makes an API token.
type TokenRequest struct {
	Name string `json:"name" doc:"what it is for, e.g. ci"`
}
