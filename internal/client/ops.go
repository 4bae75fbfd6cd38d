package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// One method per API operation. Paths live here and nowhere else on the
// client side; the bodies are apitypes' request types, the answers its
// views.

func call[T any](c *Client, ctx context.Context, method, path string, in any) (T, error) {
	var v T
	err := c.Do(ctx, method, path, in, &v)
	return v, err
}

func (c *Client) appPath(d, a string, rest ...string) string {
	p := AppPath(d, a)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// SSH keys, domains, users.

func (c *Client) AddSSHKey(ctx context.Context, name, key string) (apitypes.SSHKeyView, error) {
	return call[apitypes.SSHKeyView](c, ctx, http.MethodPost, "/v1/sshkeys", apitypes.AddSSHKeyRequest{Name: name, Key: key})
}

func (c *Client) SSHKeys(ctx context.Context) ([]apitypes.SSHKeyView, error) {
	return call[[]apitypes.SSHKeyView](c, ctx, http.MethodGet, "/v1/sshkeys", nil)
}

func (c *Client) RemoveSSHKey(ctx context.Context, fingerprint string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/sshkeys/"+url.PathEscape(fingerprint), nil, nil)
}

func (c *Client) CreateDomain(ctx context.Context, name string) (apitypes.DomainView, error) {
	return call[apitypes.DomainView](c, ctx, http.MethodPost, "/v1/domains", apitypes.CreateDomainRequest{Name: name})
}

func (c *Client) Domains(ctx context.Context) ([]apitypes.DomainView, error) {
	return call[[]apitypes.DomainView](c, ctx, http.MethodGet, "/v1/domains", nil)
}

func (c *Client) DeleteDomain(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(name), nil, nil)
}

func (c *Client) CreateUser(ctx context.Context, name string, admin bool) (apitypes.NewUserView, error) {
	return call[apitypes.NewUserView](c, ctx, http.MethodPost, "/v1/users", apitypes.CreateUserRequest{Name: name, Admin: admin})
}

func (c *Client) Users(ctx context.Context) ([]apitypes.UserView, error) {
	return call[[]apitypes.UserView](c, ctx, http.MethodGet, "/v1/users", nil)
}

// Apps.

func (c *Client) CreateApp(ctx context.Context, domain string, req apitypes.CreateAppRequest) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, "/v1/domains/"+url.PathEscape(domain)+"/apps", req)
}

func (c *Client) App(ctx context.Context, d, a string) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodGet, c.appPath(d, a), nil)
}

func (c *Client) UpdateApp(ctx context.Context, d, a string, req apitypes.UpdateAppRequest) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPatch, c.appPath(d, a), req)
}

// AppAction starts, stops or restarts an app (action: start, stop,
// restart).
func (c *Client) AppAction(ctx context.Context, d, a, action string) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, action), nil)
}

func (c *Client) DeleteApp(ctx context.Context, d, a string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a), nil, nil)
}

func (c *Client) Env(ctx context.Context, d, a string) (map[string]string, error) {
	return call[map[string]string](c, ctx, http.MethodGet, c.appPath(d, a, "env"), nil)
}

func (c *Client) PatchEnv(ctx context.Context, d, a string, p apitypes.EnvPatch) (map[string]string, error) {
	return call[map[string]string](c, ctx, http.MethodPatch, c.appPath(d, a, "env"), p)
}

func (c *Client) Deployments(ctx context.Context, d, a string) ([]apitypes.DeploymentView, error) {
	return call[[]apitypes.DeploymentView](c, ctx, http.MethodGet, c.appPath(d, a, "deployments"), nil)
}

func (c *Client) ActivateDeployment(ctx context.Context, d, a, id string) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, "deployments", url.PathEscape(id), "activate"), nil)
}

// Runtimes lists the language versions builds choose from.
func (c *Client) Runtimes(ctx context.Context) (apitypes.RuntimesView, error) {
	return call[apitypes.RuntimesView](c, ctx, http.MethodGet, "/v1/runtimes", nil)
}

// PurgeCache drops an app's build cache.
func (c *Client) PurgeCache(ctx context.Context, d, a string) (apitypes.CachePurge, error) {
	return call[apitypes.CachePurge](c, ctx, http.MethodDelete, c.appPath(d, a, "cache"), nil)
}

// Logs streams an app's logs (NDJSON lines) until the server or ctx ends.
func (c *Client) Logs(ctx context.Context, d, a string, lines int, follow bool) (io.ReadCloser, error) {
	return c.Stream(ctx, c.appPath(d, a)+"/logs?lines="+strconv.Itoa(lines)+"&follow="+strconv.FormatBool(follow))
}

// Services lists what listens in an app's gears (query: "" or
// "?gear=ID").
func (c *Client) Services(ctx context.Context, d, a, query string) ([]apitypes.ServiceView, error) {
	return call[[]apitypes.ServiceView](c, ctx, http.MethodGet, c.appPath(d, a, "services")+query, nil)
}

// Cartridges.

func (c *Client) AddCartridge(ctx context.Context, d, a, name string) (apitypes.CartridgeView, error) {
	return call[apitypes.CartridgeView](c, ctx, http.MethodPost, c.appPath(d, a, "cartridges"), apitypes.AddCartridgeRequest{Name: name})
}

func (c *Client) Cartridges(ctx context.Context, d, a string) ([]apitypes.CartridgeView, error) {
	return call[[]apitypes.CartridgeView](c, ctx, http.MethodGet, c.appPath(d, a, "cartridges"), nil)
}

func (c *Client) RemoveCartridge(ctx context.Context, d, a, name string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a, "cartridges", url.PathEscape(name)), nil, nil)
}

// DNS-name claims.

func (c *Client) Claim(ctx context.Context, name string) (apitypes.ClaimView, error) {
	return call[apitypes.ClaimView](c, ctx, http.MethodPost, "/v1/claims", apitypes.ClaimRequest{Name: name})
}

func (c *Client) ClaimChallenge(ctx context.Context, name string) (apitypes.ClaimChallenge, error) {
	return call[apitypes.ClaimChallenge](c, ctx, http.MethodGet, "/v1/claims/challenge?name="+url.QueryEscape(name), nil)
}

func (c *Client) Claims(ctx context.Context) ([]apitypes.ClaimView, error) {
	return call[[]apitypes.ClaimView](c, ctx, http.MethodGet, "/v1/claims", nil)
}

func (c *Client) GrantClaim(ctx context.Context, user, name string) (apitypes.ClaimView, error) {
	return call[apitypes.ClaimView](c, ctx, http.MethodPost, "/v1/admin/claims", apitypes.ClaimGrant{User: user, Name: name})
}

// Egress policy.

func (c *Client) Egress(ctx context.Context, d, a string) (apitypes.EgressView, error) {
	return call[apitypes.EgressView](c, ctx, http.MethodGet, c.appPath(d, a, "egress"), nil)
}

func (c *Client) AddEgressRules(ctx context.Context, d, a string, req apitypes.EgressRulesRequest) (apitypes.EgressView, error) {
	return call[apitypes.EgressView](c, ctx, http.MethodPost, c.appPath(d, a, "egress"), req)
}

func (c *Client) RemoveEgressRule(ctx context.Context, d, a string, n int) (apitypes.EgressView, error) {
	return call[apitypes.EgressView](c, ctx, http.MethodDelete, c.appPath(d, a, "egress", strconv.Itoa(n)), nil)
}

func (c *Client) TestEgress(ctx context.Context, d, a, destination, protocol string) (apitypes.EgressTestView, error) {
	return call[apitypes.EgressTestView](c, ctx, http.MethodPost, c.appPath(d, a, "egress", "test"), apitypes.EgressTestRequest{Destination: destination, Protocol: protocol})
}

// ClearEgressBlock lets an app flagged for a port scan out again (admins).
func (c *Client) ClearEgressBlock(ctx context.Context, d, a string) (apitypes.EgressView, error) {
	return call[apitypes.EgressView](c, ctx, http.MethodPost, "/v1/admin/egress/"+url.PathEscape(d)+"/"+url.PathEscape(a)+"/clear", nil)
}

// The egress router.

func (c *Client) EgressRouter(ctx context.Context, d, a string) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodGet, c.appPath(d, a, "egress", "router"), nil)
}

func (c *Client) SetEgressProxy(ctx context.Context, d, a string, acl []string) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodPut, c.appPath(d, a, "egress", "router", "proxy"), apitypes.EgressProxyRequest{ACL: acl})
}

func (c *Client) RemoveEgressProxy(ctx context.Context, d, a string) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodDelete, c.appPath(d, a, "egress", "router", "proxy"), nil)
}

func (c *Client) AddEgressRedirect(ctx context.Context, d, a, match, target string) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodPost, c.appPath(d, a, "egress", "router", "redirects"), apitypes.EgressRedirectRequest{Match: match, Target: target})
}

func (c *Client) RemoveEgressRedirect(ctx context.Context, d, a string, n int) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodDelete, c.appPath(d, a, "egress", "router", "redirects", strconv.Itoa(n)), nil)
}

func (c *Client) SetEgressTCP(ctx context.Context, d, a string, port int, targets []string) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodPut, c.appPath(d, a, "egress", "router", "tcp", strconv.Itoa(port)), apitypes.EgressTCPRequest{Targets: targets})
}

func (c *Client) RemoveEgressTCP(ctx context.Context, d, a string, port int) (apitypes.EgressRouterView, error) {
	return call[apitypes.EgressRouterView](c, ctx, http.MethodDelete, c.appPath(d, a, "egress", "router", "tcp", strconv.Itoa(port)), nil)
}

// Aliases, certificates, TCP routes.

func (c *Client) AddAlias(ctx context.Context, d, a, host string) (apitypes.AliasView, error) {
	return call[apitypes.AliasView](c, ctx, http.MethodPost, c.appPath(d, a, "aliases"), apitypes.AliasRequest{Host: host})
}

func (c *Client) Aliases(ctx context.Context, d, a string) ([]apitypes.AliasView, error) {
	return call[[]apitypes.AliasView](c, ctx, http.MethodGet, c.appPath(d, a, "aliases"), nil)
}

func (c *Client) RemoveAlias(ctx context.Context, d, a, host string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a, "aliases", url.PathEscape(host)), nil, nil)
}

func (c *Client) UploadAliasCert(ctx context.Context, d, a, host string, up apitypes.CertUpload) (apitypes.AliasView, error) {
	return call[apitypes.AliasView](c, ctx, http.MethodPut, c.appPath(d, a, "aliases", url.PathEscape(host), "certificate"), up)
}

func (c *Client) RemoveAliasCert(ctx context.Context, d, a, host string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a, "aliases", url.PathEscape(host), "certificate"), nil, nil)
}

func (c *Client) AddTCPRoute(ctx context.Context, d, a string, req apitypes.TCPRouteRequest) (apitypes.TCPRouteView, error) {
	return call[apitypes.TCPRouteView](c, ctx, http.MethodPost, c.appPath(d, a, "routes", "tcp"), req)
}

func (c *Client) TCPRoutes(ctx context.Context, d, a string) ([]apitypes.TCPRouteView, error) {
	return call[[]apitypes.TCPRouteView](c, ctx, http.MethodGet, c.appPath(d, a, "routes", "tcp"), nil)
}

func (c *Client) RemoveTCPRoute(ctx context.Context, d, a, id string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a, "routes", "tcp", url.PathEscape(id)), nil, nil)
}

// CA is the platform's root certificate.
func (c *Client) CA(ctx context.Context) (apitypes.CAView, error) {
	return call[apitypes.CAView](c, ctx, http.MethodGet, "/v1/ca", nil)
}

// Scaling and idling.

func (c *Client) Scale(ctx context.Context, d, a string, req apitypes.ScaleRequest) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, "scale"), req)
}

// ScaleProcesses sets gear counts per process type (worker=3, web=2).
func (c *Client) ScaleProcesses(ctx context.Context, d, a string, counts map[string]int) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, "formation"), apitypes.FormationRequest{Processes: counts})
}

// DeployImage deploys an image from a registry to an app.
func (c *Client) DeployImage(ctx context.Context, d, a string, req apitypes.ImageRequest) (apitypes.DeployResult, error) {
	return call[apitypes.DeployResult](c, ctx, http.MethodPost, c.appPath(d, a, "image"), req)
}

// SaveSnapshot saves a snapshot of an app.
func (c *Client) SaveSnapshot(ctx context.Context, d, a string) (apitypes.SnapshotView, error) {
	return call[apitypes.SnapshotView](c, ctx, http.MethodPost, c.appPath(d, a, "snapshots"), nil)
}

// Snapshots lists an app's snapshots.
func (c *Client) Snapshots(ctx context.Context, d, a string) ([]apitypes.SnapshotView, error) {
	return call[[]apitypes.SnapshotView](c, ctx, http.MethodGet, c.appPath(d, a, "snapshots"), nil)
}

// RestoreSnapshot restores an app from a snapshot, in place, or (to) as
// a new app.
func (c *Client) RestoreSnapshot(ctx context.Context, d, a, id, to string) (apitypes.RestoreView, error) {
	p := c.appPath(d, a, "snapshots", url.PathEscape(id), "restore")
	if to != "" {
		p += "?to=" + url.QueryEscape(to)
	}
	return call[apitypes.RestoreView](c, ctx, http.MethodPost, p, nil)
}

// ExportSnapshot opens a snapshot's archive (tar + zstd).
func (c *Client) ExportSnapshot(ctx context.Context, d, a, id string) (io.ReadCloser, error) {
	return c.Stream(ctx, c.appPath(d, a, "snapshots", url.PathEscape(id), "export"))
}

// ImportSnapshot makes a new app (name, or the archive's) in domain d
// from an exported snapshot archive.
func (c *Client) ImportSnapshot(ctx context.Context, d, name string, archive io.Reader) (apitypes.RestoreView, error) {
	p := "/v1/domains/" + url.PathEscape(d) + "/imports"
	if name != "" {
		p += "?name=" + url.QueryEscape(name)
	}
	return call[apitypes.RestoreView](c, ctx, http.MethodPost, p, archive)
}

// BackupTarget is where the platform keeps its snapshots (admin).
func (c *Client) BackupTarget(ctx context.Context) (apitypes.BackupTargetView, error) {
	return call[apitypes.BackupTargetView](c, ctx, http.MethodGet, "/v1/admin/backup/target", nil)
}

// SetBackupTarget moves the platform's snapshots to another repository (admin).
func (c *Client) SetBackupTarget(ctx context.Context, req apitypes.BackupTargetRequest) (apitypes.BackupTargetView, error) {
	return call[apitypes.BackupTargetView](c, ctx, http.MethodPut, "/v1/admin/backup/target", req)
}

// CheckBackups checks the backup repository, reading its data back (admin).
func (c *Client) CheckBackups(ctx context.Context) (apitypes.BackupCheckView, error) {
	return call[apitypes.BackupCheckView](c, ctx, http.MethodPost, "/v1/admin/backup/check", nil)
}

// ScheduleBackups sets an app's backup schedule and retention.
func (c *Client) ScheduleBackups(ctx context.Context, d, a string, req apitypes.BackupScheduleRequest) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, "backups"), req)
}

// BackupKey is the backup repository's key (admin).
func (c *Client) BackupKey(ctx context.Context) (apitypes.BackupKeyView, error) {
	return call[apitypes.BackupKeyView](c, ctx, http.MethodGet, "/v1/admin/backup/key", nil)
}

// Drains lists an app's log drains.
func (c *Client) Drains(ctx context.Context, d, a string) ([]apitypes.LogDrainView, error) {
	return call[[]apitypes.LogDrainView](c, ctx, http.MethodGet, c.appPath(d, a, "drains"), nil)
}

// AddDrain adds a log drain.
func (c *Client) AddDrain(ctx context.Context, d, a, drainURL string) (apitypes.LogDrainView, error) {
	return call[apitypes.LogDrainView](c, ctx, http.MethodPost, c.appPath(d, a, "drains"), apitypes.LogDrainRequest{URL: drainURL})
}

// RemoveDrain removes a log drain.
func (c *Client) RemoveDrain(ctx context.Context, d, a, id string) error {
	return c.Do(ctx, http.MethodDelete, c.appPath(d, a, "drains", url.PathEscape(id)), nil, nil)
}

// Cron lists an app's scheduled jobs with their runs.
func (c *Client) Cron(ctx context.Context, d, a string) ([]apitypes.CronView, error) {
	return call[[]apitypes.CronView](c, ctx, http.MethodGet, c.appPath(d, a, "cron"), nil)
}

func (c *Client) Idle(ctx context.Context, d, a string, req apitypes.IdleRequest) (apitypes.AppView, error) {
	return call[apitypes.AppView](c, ctx, http.MethodPost, c.appPath(d, a, "idle"), req)
}

func (c *Client) Events(ctx context.Context, d, a string) ([]apitypes.EventView, error) {
	return call[[]apitypes.EventView](c, ctx, http.MethodGet, c.appPath(d, a, "events"), nil)
}

// Administration.

func (c *Client) RotateSecrets(ctx context.Context) (apitypes.SecretsRotation, error) {
	return call[apitypes.SecretsRotation](c, ctx, http.MethodPost, "/v1/admin/secrets/rotate", nil)
}

func (c *Client) Doctor(ctx context.Context) ([]apitypes.DoctorCheck, error) {
	return call[[]apitypes.DoctorCheck](c, ctx, http.MethodGet, "/v1/admin/doctor", nil)
}

// TunnelURL is the WebSocket URL of a tunnel to remote (GEARIP:PORT, a
// service in one of the caller's gears), for `port-forward --via https`;
// it is dialled with the token in an Authorization header.
func (c *Client) TunnelURL(remote string) string {
	return strings.Replace(strings.Replace(c.Server, "https://", "wss://", 1), "http://", "ws://", 1) + "/v1/tunnel?addr=" + url.QueryEscape(remote)
}

// Nodes lists the platform's machines (admin).
func (c *Client) Nodes(ctx context.Context) ([]apitypes.NodeView, error) {
	return call[[]apitypes.NodeView](c, ctx, http.MethodGet, "/v1/nodes", nil)
}

// Cordon stops (on) or resumes placing new gears on a node (admin).
func (c *Client) Cordon(ctx context.Context, name string, on bool) (apitypes.NodeView, error) {
	verb := "uncordon"
	if on {
		verb = "cordon"
	}
	return call[apitypes.NodeView](c, ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/"+verb, nil)
}

// RemoveNode forgets a node that is down (admin).
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil, nil)
}

// JoinToken makes a single-use join token (admin).
func (c *Client) JoinToken(ctx context.Context, ttl string) (apitypes.JoinTokenView, error) {
	return call[apitypes.JoinTokenView](c, ctx, http.MethodPost, "/v1/nodes/tokens", apitypes.JoinTokenRequest{TTL: ttl})
}

// Drain moves every app's web gears off a node (admin).
func (c *Client) Drain(ctx context.Context, name string) (apitypes.DrainView, error) {
	return call[apitypes.DrainView](c, ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/drain", nil)
}

// MigrateStore moves a machine that runs alone into a new cluster's
// store, live.
func (c *Client) MigrateStore(ctx context.Context, req apitypes.StoreMigrateRequest) (apitypes.StoreMigrateView, error) {
	return call[apitypes.StoreMigrateView](c, ctx, http.MethodPost, "/v1/admin/store/migrate", req)
}

// Run runs a command in a one-off gear of the app.
func (c *Client) Run(ctx context.Context, d, a string, req apitypes.RunRequest) (apitypes.RunView, error) {
	return call[apitypes.RunView](c, ctx, http.MethodPost, c.appPath(d, a, "runs"), req)
}

// Console passwords, sessions and API tokens.

// SetPassword sets a user's console password.
func (c *Client) SetPassword(ctx context.Context, user, password string) error {
	return c.Do(ctx, http.MethodPut, "/v1/users/"+url.PathEscape(user)+"/password", apitypes.PasswordRequest{Password: password}, nil)
}

// SignIn signs in with a password and returns the session.
func (c *Client) SignIn(ctx context.Context, user, password string) (apitypes.SessionView, error) {
	return call[apitypes.SessionView](c, ctx, http.MethodPost, "/v1/sessions", apitypes.SignInRequest{User: user, Password: password})
}

// SignOut ends the session the client's token is.
func (c *Client) SignOut(ctx context.Context) error {
	return c.Do(ctx, http.MethodDelete, "/v1/sessions/current", nil, nil)
}

// SignOutEverywhere ends every console session of the caller.
func (c *Client) SignOutEverywhere(ctx context.Context) error {
	return c.Do(ctx, http.MethodDelete, "/v1/sessions", nil, nil)
}

// Tokens lists the caller's API tokens and sessions.
func (c *Client) Tokens(ctx context.Context) ([]apitypes.TokenView, error) {
	return call[[]apitypes.TokenView](c, ctx, http.MethodGet, "/v1/tokens", nil)
}

// CreateToken makes an API token (its secret in the answer, once).
func (c *Client) CreateToken(ctx context.Context, name string) (apitypes.TokenView, error) {
	return call[apitypes.TokenView](c, ctx, http.MethodPost, "/v1/tokens", apitypes.TokenRequest{Name: name})
}

// RevokeToken revokes one of the caller's tokens.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// Stats is an app's traffic over the last hour.
func (c *Client) Stats(ctx context.Context, d, a string) (apitypes.StatsView, error) {
	return call[apitypes.StatsView](c, ctx, http.MethodGet, c.appPath(d, a, "stats"), nil)
}
