// Package server runs every role of Gantry in one process (`gantry
// server`): store, router, agent, builder, API and SSH endpoint, wired
// together with embedded defaults. It owns start-up (bootstrap of the first
// admin and the local client configuration) and shutdown: on SIGTERM every
// role stops, and the apps' gears keep running for the next start.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caddyserver/certmagic"

	"github.com/gantry-paas/gantry/internal/artifact"
	"github.com/gantry-paas/gantry/internal/console"
	"github.com/gantry-paas/gantry/internal/node/drain"
	"github.com/gantry-paas/gantry/internal/node/image"
	"github.com/gantry-paas/gantry/internal/node/peer"
	"github.com/gantry-paas/gantry/internal/node/runtimes"

	"github.com/gantry-paas/gantry/internal/control/certstore"
	"github.com/gantry-paas/gantry/internal/control/cron"
	"github.com/gantry-paas/gantry/internal/control/scheduler"
	"github.com/gantry-paas/gantry/internal/control/service"
	"github.com/gantry-paas/gantry/internal/control/stats"

	"github.com/gantry-paas/gantry/internal/edge/acme"

	"github.com/gantry-paas/gantry/internal/egress/enforce"

	"github.com/gantry-paas/gantry/internal/control/events"
	"github.com/gantry-paas/gantry/internal/control/routes"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gantry-paas/gantry/internal/client/config"
	"github.com/gantry-paas/gantry/internal/control/api"
	"github.com/gantry-paas/gantry/internal/control/autoscale"
	"github.com/gantry-paas/gantry/internal/control/builder"
	"github.com/gantry-paas/gantry/internal/control/gitrepo"
	"github.com/gantry-paas/gantry/internal/control/sshd"
	"github.com/gantry-paas/gantry/internal/control/store"
	"github.com/gantry-paas/gantry/internal/edge/connguard"
	"github.com/gantry-paas/gantry/internal/edge/pki"
	"github.com/gantry-paas/gantry/internal/edge/router"
	"github.com/gantry-paas/gantry/internal/egress/dns"
	"github.com/gantry-paas/gantry/internal/egress/policy"
	egressrouter "github.com/gantry-paas/gantry/internal/egress/router"
	"github.com/gantry-paas/gantry/internal/handoff"
	"github.com/gantry-paas/gantry/internal/layout"
	"github.com/gantry-paas/gantry/internal/metrics"
	"github.com/gantry-paas/gantry/internal/node/agent"
	"github.com/gantry-paas/gantry/internal/node/disk"
	"github.com/gantry-paas/gantry/internal/node/gearenv"
	"github.com/gantry-paas/gantry/internal/node/hostcheck"
	"github.com/gantry-paas/gantry/internal/node/runtime/netplan"
	"github.com/gantry-paas/gantry/internal/node/runtime/sandbox"
)

// Options configure the server. The zero value of each field means its
// default.
type Options struct {
	DataDir    string // /var/lib/gantry as root, else ~/.local/share/gantry
	HTTPListen string // :80 as root, else :8080
	// HTTPSListen is the router's TLS address: :443 as root, else :8443;
	// "off" serves no TLS.
	HTTPSListen string
	// HTTP3 serves HTTP/3 on the HTTPS port over UDP and advertises it.
	HTTP3 bool
	// TrustedProxies (CIDRs or addresses) may set X-Forwarded-*.
	TrustedProxies []string
	// AccessLog is the router's access log file (default
	// DATA/logs/access.log); "off" writes none, "-" to stderr.
	AccessLog string
	// HeaderTimeout, TunnelTimeout and MaxHeaderBytes tune the router
	// (defaults 10s, 1h, 64 KiB).
	HeaderTimeout  time.Duration
	TunnelTimeout  time.Duration
	MaxHeaderBytes int
	// MaxClientConns caps one client address's open connections on the
	// router's ports, MaxGearConns one gear's through the egress router
	// (0: no cap).
	MaxClientConns int
	MaxGearConns   int
	// DiskLimits is "auto" (each app's directory a filesystem of its own,
	// sized by its gear size, when root with loop devices) or "off".
	DiskLimits string
	// ResolvConf is the host's resolver configuration (/etc/resolv.conf):
	// the DNS forwarder's upstreams, which gears reach through it.
	ResolvConf string
	// AliasVerification and DNSResolver: see api.Options.
	AliasVerification string
	DNSResolver       string
	// MaxPushBytes is the largest pack a push may send (100 MiB).
	MaxPushBytes int64
	// Store is where the records are kept: "" for SQLite in the data
	// directory, or etcd://HOST:PORT[,HOST:PORT…] for an etcd cluster
	// (https endpoints with StoreCA, StoreCert and StoreKey for mutual
	// TLS).
	Store, StoreCA, StoreCert, StoreKey string
	// NodeName names this machine among the platform's (default: the
	// host name's first label); Advertise is the address other machines
	// reach it at (default 127.0.0.1: one machine).
	NodeName  string
	Advertise string
	// PeerPort is the cluster port on the advertised address (7443):
	// mutual TLS between machines' agents. NodeGrace is how long a
	// machine may be down before its gears start elsewhere (20s).
	PeerPort  int
	NodeGrace time.Duration
	// ClusterInit starts a cluster with this machine's etcd member (the
	// records of a machine that ran alone move into it); Join (the
	// platform's https URL) with JoinToken enters one. EtcdClientPort and
	// EtcdPeerPort are the member's ports on the advertised address
	// (2379, 2380).
	ClusterInit                  bool
	Join, JoinToken              string
	EtcdClientPort, EtcdPeerPort int
	// RuntimesDir holds language runtimes (default DATA/runtimes).
	RuntimesDir string
	// BuildMemory limits build steps' memory (namespaced gears), apart
	// from the app's gear size; 0: the gear size's.
	BuildMemory int64
	// DrainTimeout bounds how long a server a new process took over from
	// waits for open requests and tunnels (a plain stop waits 5 s).
	DrainTimeout time.Duration
	// PIDFile, if set, holds the pid of the process that serves (it
	// changes at a SIGHUP hand-off).
	PIDFile string
	// HealthInterval is how often TCP route members are checked (2s).
	HealthInterval time.Duration
	// ACMEDirectory, if set, is the ACME CA (e.g. Let's Encrypt's
	// https://acme-v02.api.letsencrypt.org/directory) that gives aliases
	// without an uploaded certificate one; ACMEEmail is the account.
	ACMEDirectory string
	ACMEEmail     string
	// ACMERoots (PEM file) are the roots the ACME directory is served
	// with, when it is not publicly trusted (a test CA such as pebble).
	ACMERoots   string
	SSHListen   string // :2222
	CloudDomain string // localhost
	// Host is the name clients use to reach this machine, in git and API
	// URLs (default localhost).
	Host string
	// ClientConfig is where the bootstrap writes the CLI's configuration.
	ClientConfig string
	// StartTimeout is how long a new gear has to listen (default 60s).
	StartTimeout time.Duration
	// Isolation is "auto" (namespaces when root on Linux with runc and
	// nft, else process), "namespaces" or "process".
	Isolation string
	// EgressDefault is the verdict for outbound connections no rule of an
	// app matches: allow (default) or deny.
	EgressDefault string
	// ScanDistinct and ScanWindow flag a port scan: that many distinct
	// refused destinations within the window (20 in 1m); ScanBlock cuts a
	// flagged app's outbound traffic until an admin clears it.
	ScanDistinct int
	ScanWindow   time.Duration
	ScanBlock    bool
	// EgressPrivate lets gears reach link-local and private networks
	// through the host (by default they never do).
	EgressPrivate bool
	// EgressProxyPort is the egress router's HTTP proxy port (3128);
	// redirect ports follow it.
	EgressProxyPort int
	// EgressDNSPort is the DNS forwarder's port on the gateway (53);
	// EgressDNSUpstream its resolvers (default: /etc/resolv.conf's).
	EgressDNSPort     int
	EgressDNSUpstream []string
	// EgressLabels is a JSON file of port labels over the built-in ones:
	// {"name": ["25/tcp", "8000-8100"]}.
	EgressLabels string
	// GearSubnet is the subnet of namespaced gears (default 10.88.0.0/16).
	GearSubnet string
	// Overlay joins namespaced gears across machines: auto, wireguard or
	// vxlan.
	Overlay string
	// Roles is what the machine does in a cluster (comma-separated:
	// control, node, edge; default all three).
	Roles string
	// NetPrefix names the bridge, namespaces and nftables tables
	// (default "gantry"); tests use their own.
	NetPrefix string
	// MaxGears is the most gears one app may have (default 16).
	MaxGears int
	// WakeTimeout bounds how long a request waits for an idle app.
	WakeTimeout time.Duration
	// ImportLimit is the most an imported snapshot archive may unpack to.
	ImportLimit int64
	// BackupRepo is the restic repository of snapshots ("": DATA/backups/restic);
	// BackupMinEvery the shortest backup schedule (tests shorten it).
	BackupRepo     string
	BackupMinEvery time.Duration
	// InsecureRegistries are image registries (host:port) reached over
	// plain HTTP.
	InsecureRegistries []string
	// DrainAllowLoopback lets log drains reach loopback addresses (tests);
	// DrainRetry is a drain's first back-off (default 250ms).
	DrainAllowLoopback bool
	DrainRetry         time.Duration
	// CronMinute is how long a minute of the apps' cron schedules lasts
	// (tests shorten it).
	CronMinute time.Duration
	// ScaleDownAfter is how long load must stay low before a gear goes
	// (default 30s), and the cooldown after a change.
	ScaleDownAfter time.Duration
	Version        string
	Log            *slog.Logger
	// Ready, if set, is called with the bound addresses once serving.
	Ready func(http, ssh net.Addr)
}

func (o *Options) defaults() error {
	root := os.Geteuid() == 0
	if o.DataDir == "" {
		if root {
			o.DataDir = "/var/lib/gantry"
		} else {
			base := os.Getenv("XDG_DATA_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return fmt.Errorf("finding a data directory: %w (pass --data)", err)
				}
				base = filepath.Join(home, ".local", "share")
			}
			o.DataDir = filepath.Join(base, "gantry")
		}
	}
	if o.HTTPListen == "" {
		o.HTTPListen = ":8080"
		if root {
			o.HTTPListen = ":80"
		}
	}
	if o.HTTPSListen == "" {
		o.HTTPSListen = ":8443"
		if root {
			o.HTTPSListen = ":443"
		}
	}
	if o.SSHListen == "" {
		o.SSHListen = ":2222"
	}
	if o.Host == "" {
		o.Host = "localhost"
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	if o.ClientConfig == "" {
		p, err := config.Path()
		if err != nil {
			return err
		}
		o.ClientConfig = p
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	return nil
}

// Run starts every role and serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	log := o.Log
	started := time.Now()
	// Every fixed listening socket goes through the hand-off, so that a
	// restart (SIGHUP) passes it to the new process.
	ho := handoff.New(o.PIDFile, log)
	defer ho.Stop()
	if n, err := connguard.RaiseFileLimit(); err != nil {
		log.Warn("raising the open-file limit", "err", err, "limit", n)
	} else {
		log.Info("open-file limit", "limit", n)
	}
	if err := os.MkdirAll(o.DataDir, 0o711); err != nil {
		return fmt.Errorf("creating data directory %s: %w", o.DataDir, err)
	}
	// Apps' users traverse the data root to their own directory (0710,
	// their group) but can list nothing.
	os.Chmod(o.DataDir, 0o711)
	os.MkdirAll(filepath.Join(o.DataDir, "apps"), 0o711)
	os.Chmod(filepath.Join(o.DataDir, "apps"), 0o711)
	lay := layout.Layout{Root: o.DataDir}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the gantry binary: %w", err)
	}
	if o.EtcdClientPort == 0 {
		o.EtcdClientPort = 2379
	}
	if o.EtcdPeerPort == 0 {
		o.EtcdPeerPort = 2380
	}
	if o.PeerPort == 0 {
		o.PeerPort = 7443
	}
	if o.NodeGrace == 0 {
		o.NodeGrace = 20 * time.Second
	}
	st, clu, err := openCluster(ctx, &o, lay, log)
	if err != nil {
		return err
	}
	defer clu.Close()
	if st == nil {
		if st, err = openStore(o, lay); err != nil {
			return err
		}
	}
	defer st.Close()
	if o.CloudDomain == "" {
		o.CloudDomain = "localhost"
	}

	// The router first: the API needs its ports, and is mounted on it
	// before it serves; wake requests reach the scaler through a queue.
	// URLs need the router's bound port.
	wakes := router.NewWakeQueue()
	ca, err := pki.Open(lay.PKI(), o.CloudDomain)
	if err != nil {
		return err
	}
	mets := metrics.New()
	// Log drains ship this machine's lines: its gears' logs and its
	// router's access lines. They never reach the platform's own
	// addresses (loopback, link-local, the gears' subnet).
	drainPolicy := drain.Policy{AllowLoopback: o.DrainAllowLoopback, Forbidden: []netip.Prefix{netplan.DefaultSubnet}}
	if o.GearSubnet != "" {
		if p, err := netip.ParsePrefix(o.GearSubnet); err == nil {
			drainPolicy.Forbidden = []netip.Prefix{p.Masked()}
		}
	}
	nodeName, err := thisNodeName(o)
	if err != nil {
		return err
	}
	drains := drain.New(drain.Options{Store: st, Layout: lay, Node: nodeName, Policy: drainPolicy, Log: log.With("role", "drains"),
		MinRetry: o.DrainRetry})
	ropts := router.Options{Log: log, Listen: o.HTTPListen, Waker: wakes, WakeTimeout: o.WakeTimeout, AccessTap: drains,
		PlatformHosts: platformHosts(o),
		Certs:         ca, HeaderTimeout: o.HeaderTimeout, TunnelTimeout: o.TunnelTimeout, MaxHeaderBytes: o.MaxHeaderBytes,
		HealthInterval: o.HealthInterval, Metrics: mets.Registry, MaxConnsPerClient: o.MaxClientConns,
		ListenFunc: ho.Listen}
	if o.HTTPSListen != "off" {
		ropts.TLSListen = o.HTTPSListen
		ropts.HTTP3 = o.HTTP3
	}
	for _, p := range o.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			return fmt.Errorf("--trusted-proxy %q: %w", p, err)
		}
		ropts.TrustedProxies = append(ropts.TrustedProxies, pfx)
	}
	accessLog, err := openAccessLog(o.AccessLog, lay)
	if err != nil {
		return err
	}
	if accessLog != nil {
		defer accessLog.Close()
		ropts.AccessLog = accessLog
	}
	var acmeIss *acme.Issuer
	if o.ACMEDirectory != "" {
		var shared certmagic.Storage
		if clu != nil {
			shared = &certstore.Storage{St: st}
		}
		if acmeIss, err = acmeFromFlags(o, lay, shared, log); err != nil {
			return err
		}
		ropts.ACME = acmeIss
	}
	rt, err := router.New(ropts)
	if err != nil {
		return err
	}
	httpPort := rt.Addr().(*net.TCPAddr).Port
	httpsPort := 0
	if a := rt.TLSAddr(); a != nil {
		httpsPort = a.(*net.TCPAddr).Port
	}
	appURL := func(host string) string { return "http://" + host + portSuffix(httpPort) + "/" }
	serverURL := "http://" + o.Host + portSuffix(httpPort)

	isolation, why, err := chooseIsolation(o.Isolation)
	if err != nil {
		return err
	}
	network := netplan.Plan{Prefix: o.NetPrefix, HostTCPPorts: []uint16{uint16(httpPort)}}
	if httpsPort != 0 {
		network.HostTCPPorts = append(network.HostTCPPorts, uint16(httpsPort))
	}
	if o.GearSubnet != "" {
		if network.Subnet, err = netip.ParsePrefix(o.GearSubnet); err != nil {
			return fmt.Errorf("--gear-subnet: %w", err)
		}
	}
	node, err := thisNode(o, isolation)
	if err != nil {
		return err
	}
	if node.Roles, err = parseRoles(o.Roles, clu != nil); err != nil {
		return err
	}
	has := func(role string) bool { return node.HasRole(role) }
	if clu != nil && isolation == agent.Namespaces {
		// This machine's block of the gear subnet, and the overlay to
		// the others' (before anything uses the gateway's address).
		addr, _ := netip.ParseAddr(node.Address)
		block, err := scheduler.ClaimBlock(st, node.Name, network.Normalize().Subnet, addr)
		if err != nil {
			return err
		}
		mode, err := scheduler.ClaimOverlay(st, o.Overlay, netplan.WireGuardAvailable())
		if err != nil {
			return err
		}
		network.Block, network.Overlay = block, &netplan.Overlay{Mode: mode, Local: addr}
		node.GearBlock, node.Overlay = block.String(), mode
		if mode == netplan.OverlayWireGuard {
			key, err := overlayKey(lay.OverlayKey())
			if err != nil {
				return err
			}
			network.Overlay.PrivateKey = key
			if node.OverlayKey, err = netplan.WireGuardPublic(key); err != nil {
				return err
			}
		}
	}
	// The DNS forwarder, on the gateway (isolated gears only): apps with
	// hostname rules resolve through it, and their answers are let
	// through their policy.
	var dnsOpts *dns.Options
	var dnsAddr netip.AddrPort
	var gearResolv string
	var upstreams []string
	if isolation == agent.Namespaces {
		port := o.EgressDNSPort
		if port == 0 {
			port = 53
		}
		upstreams = o.EgressDNSUpstream
		if len(upstreams) == 0 {
			conf, _ := os.ReadFile(o.ResolvConf)
			upstreams = dns.Upstreams(string(conf))
		}
		for i, u := range upstreams {
			if _, _, err := net.SplitHostPort(u); err != nil {
				upstreams[i] = net.JoinHostPort(u, "53")
			}
		}
		if len(upstreams) > 0 {
			dnsAddr = netip.AddrPortFrom(network.Normalize().Gateway(), uint16(port))
			network.HostTCPPorts = append(network.HostTCPPorts, uint16(port))
			network.HostUDPPorts = append(network.HostUDPPorts, uint16(port))
			dnsOpts = &dns.Options{Addr: dnsAddr, Upstreams: upstreams, Log: log, Listen: ho.Listen, ListenPacket: ho.ListenPacket}
			// Gears resolve through the forwarder: a host resolver on
			// loopback (systemd-resolved's 127.0.0.53) is out of a gear's
			// reach, the forwarder (in the host's namespace) is not.
			if gearResolv, err = writeGearResolvConf(lay, o.ResolvConf, dnsAddr); err != nil {
				return err
			}
			log.Info("gears resolve through the DNS forwarder", "forwarder", dnsAddr.String(), "upstreams", strings.Join(upstreams, ","), "resolv_conf", o.ResolvConf)
		} else {
			log.Warn("no DNS resolver in /etc/resolv.conf and no --egress-dns-upstream: hostname egress rules learn nothing from the apps' lookups")
		}
	}
	if isolation == agent.Namespaces && !o.EgressPrivate {
		network.Forbidden = netplan.PrivateNets
		conf, _ := os.ReadFile(o.ResolvConf)
		for _, u := range append(dns.Upstreams(string(conf)), upstreams...) {
			if ap, err := netip.ParseAddrPort(u); err == nil {
				network.Resolvers = append(network.Resolvers, ap.Addr().Unmap())
			} else if a, err := netip.ParseAddr(u); err == nil {
				network.Resolvers = append(network.Resolvers, a.Unmap())
			}
		}
	}
	runtimesDir := o.RuntimesDir
	if runtimesDir == "" {
		runtimesDir = filepath.Join(o.DataDir, "runtimes")
	}
	os.MkdirAll(runtimesDir, 0o755)
	env := &gearenv.Builder{Layout: lay, Path: os.Getenv("PATH"), Store: st}
	if isolation == agent.Namespaces {
		env.Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin"
	}
	switch o.AliasVerification {
	case "", service.VerifyAuto, service.VerifyDNS, service.VerifyOff:
	default:
		return fmt.Errorf("--alias-verification %q: use auto, dns or off", o.AliasVerification)
	}
	switch o.EgressDefault {
	case "", policy.Allow, policy.Deny:
	default:
		return fmt.Errorf("--egress-default %q: use allow or deny", o.EgressDefault)
	}
	var labels policy.Labels
	if o.EgressLabels != "" {
		raw, err := os.ReadFile(o.EgressLabels)
		if err != nil {
			return fmt.Errorf("--egress-labels: %w", err)
		}
		var table map[string][]string
		if err := json.Unmarshal(raw, &table); err != nil {
			return fmt.Errorf("--egress-labels %s: %w (want {\"name\": [\"25/tcp\", \"8000-8100\"]})", o.EgressLabels, err)
		}
		if labels, err = policy.ParseLabels(table); err != nil {
			return fmt.Errorf("--egress-labels %s: %w", o.EgressLabels, err)
		}
	}
	scan := policy.DefaultScan
	if o.ScanDistinct > 0 {
		scan.Distinct = o.ScanDistinct
	}
	if o.ScanWindow > 0 {
		scan.Window = o.ScanWindow
	}
	if err := scan.Validate(); err != nil {
		return err
	}
	// The egress router, on the gear network's gateway (isolated gears
	// only: it knows apps by their gears' addresses).
	var egr *egressRole
	var egrPorts *enforce.RouterPorts
	if isolation == agent.Namespaces {
		plan := network.Normalize()
		proxyPort := o.EgressProxyPort
		if proxyPort == 0 {
			proxyPort = 3128
		}
		egrPorts = &enforce.RouterPorts{Proxy: uint16(proxyPort)}
		for k := 1; k <= 16; k++ {
			egrPorts.Redirects = append(egrPorts.Redirects, uint16(proxyPort+k))
		}
		var egressLog io.Writer
		if accessLog != nil {
			f, err := openAccessLog(egressLogPath(o.AccessLog, lay), lay)
			if err != nil {
				return err
			}
			defer f.Close()
			egressLog = f
		}
		egr = &egressRole{st: st, log: log, subnet: plan.Subnet, r: egressrouter.New(egressrouter.Options{Addr: plan.Gateway(), ProxyPort: proxyPort,
			Redirects: len(egrPorts.Redirects), Forbidden: forbiddenNets(plan.Subnet), AccessLog: egressLog, Registerer: mets.Registry, Log: log,
			MaxConnsPerGear: o.MaxGearConns, ListenWith: ho.ListenWith})}
		env.EgressGateway, env.EgressSubnet = plan.Gateway(), plan.Subnet
		env.EgressProxy = netip.AddrPortFrom(plan.Gateway(), uint16(proxyPort))
	}
	var disks *disk.Images
	switch o.DiskLimits {
	case "", "auto":
		if err := disk.Available(); err != nil {
			log.Warn("apps have no disk limit", "why", err.Error())
		} else {
			disks = &disk.Images{Dir: filepath.Join(o.DataDir, "disks")}
		}
	case "off":
	default:
		return fmt.Errorf("--disk-limits %q: use auto or off", o.DiskLimits)
	}
	hostOpts := &hostcheck.Options{DataDir: o.DataDir, Namespaced: isolation == agent.Namespaces, ResolvConf: o.ResolvConf, DNS: dnsAddr}
	if isolation == agent.Namespaces {
		hostOpts.Bridge = network.Normalize().Bridge
	}
	evlog := events.New(st, log, func(a *store.App, e store.Event) {
		switch kind := strings.TrimSuffix(e.Kind, events.FailedSufx); {
		case e.Kind == events.PortScan:
			mets.PortScans.WithLabelValues(a.FullName()).Inc()
		case kind == "backup":
			result := "ok"
			if e.Kind != kind {
				result = "failed"
			}
			mets.Backups.WithLabelValues(a.FullName(), result).Inc()
		case slices.Contains(events.Scaling, kind):
			mets.ScaleEvents.WithLabelValues(a.FullName(), e.Kind).Inc()
		default:
			mets.AppEvents.WithLabelValues(a.FullName(), e.Kind).Inc()
		}
	})
	enf, err := enforce.New(enforce.Options{Store: st, Log: log, Enabled: isolation == agent.Namespaces, Network: network, Node: node.Name,
		Default: o.EgressDefault, Labels: labels, Scan: scan, ScanBlock: o.ScanBlock,
		OnEvent:   func(a *store.App, kind, reason string) { evlog.Record(a, store.Event{Kind: kind, Reason: reason}) },
		OnRefused: func(a *store.App, n int) { mets.EgressRefused.WithLabelValues(a.FullName()).Add(float64(n)) },
		Router:    egrPorts, DNS: dnsAddr, DNSUpstreams: upstreams})
	if err != nil {
		return err
	}
	var artifacts *artifact.Cache
	if clu != nil {
		artifacts = &artifact.Cache{Dir: lay.Artifacts()}
	}
	var peers *peer.Client
	var place func(tx *store.Tx, app *store.App, n int) ([]string, error)
	gearIP := ""
	if clu != nil {
		peers = peer.NewClient(clu.certs.CA.ClientTLS(clu.certs.Cert), o.Advertise)
		place = scheduler.Placer(st, isolation)
		if isolation == agent.Process {
			gearIP = o.Advertise // the other machines' routers reach them
		}
	}
	ag, err := agent.New(agent.Options{Store: st, Layout: lay, Log: log, Router: rt, Node: node.Name, Place: place, Peers: peers, Artifacts: artifacts,
		Images: &image.Puller{Cache: lay.ImageLayers(), Insecure: o.InsecureRegistries, Forbidden: drainPolicy.Forbidden}, Gearless: !node.HasRole(store.RoleNode), IP: gearIP, Exe: exe, Env: env.ForGear, Egress: enf,
		Disks: disks, GearResolvConf: gearResolv,
		StartTimeout: o.StartTimeout, Isolation: isolation, Network: network, EgressRouter: egrPorts, BuildMemory: o.BuildMemory, RuntimesDir: runtimesDir,
		Hook: func(dep *store.Deployment, name string) string {
			h, err := builder.FindHooks(dep.Dir)
			if err != nil {
				return ""
			}
			return h.Paths[name]
		},
		RunHost: builder.RunCommand,
	})
	if err != nil {
		return err
	}
	policy := autoscale.DefaultPolicy
	if o.ScaleDownAfter > 0 {
		policy.DownWindow, policy.Cooldown = o.ScaleDownAfter, o.ScaleDownAfter
	}
	var leading *leaderFlag
	if clu != nil {
		leading = &leaderFlag{st: st, role: "autoscaler", self: node.Name}
	}
	// In a cluster the scaler counts every machine's router.
	var load autoscale.Router = rt
	var clusterLoad *autoscale.ClusterLoad
	if clu != nil {
		clusterLoad = &autoscale.ClusterLoad{Local: rt, Store: st, Self: node.Name}
		load = clusterLoad
	}
	scaler, err := autoscale.New(autoscale.Options{Store: st, Router: load, Agent: ag, Log: log, Policy: policy, Events: evlog, Wakes: wakes, Leading: leading.fn()})
	if err != nil {
		return err
	}
	bld, err := builder.New(builder.Options{Store: st, Layout: lay, Log: log, Deployer: ag, Node: node.Name, Artifacts: artifacts, Run: ag.RunSandboxed, MaxPushBytes: o.MaxPushBytes,
		Runtimes: func() []runtimes.Runtime { return listRuntimes(runtimesDir, env.Path, log) },
		FetchGo: func(ctx context.Context, v string) (string, error) {
			return runtimes.FetchGo(ctx, runtimesDir, v, os.Environ())
		},
		StaticServer: shellQuote(exe) + " static-serve", Env: env.ForBuild,
		URL: func(a *store.App) string { return appURL(a.Host) }})
	if err == nil {
		bld.CleanStale(started)
	}
	if err != nil {
		return err
	}
	sshOpts := sshd.Options{Store: st, Layout: lay, Log: log, Listen: o.SSHListen, ListenFunc: ho.Listen, Builder: bld, Gears: ag, Services: serviceDialer{ag}}
	if !has(store.RoleControl) {
		sshOpts.Refuse = noControl(st, node.Name)
	}
	ssh, err := sshd.New(sshOpts)
	if err != nil {
		return err
	}
	sshPort := ssh.Addr().(*net.TCPAddr).Port
	ag.AllowHostPort(uint16(sshPort))
	hostKey := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(ssh.HostKey())))
	knownHost := o.Host
	if sshPort != 22 {
		knownHost = fmt.Sprintf("[%s]:%d", o.Host, sshPort)
	}
	jobs := cron.New(cron.Options{Store: st, Runner: ag, Self: node.Name, Minute: o.CronMinute, Log: log.With("role", "cron"),
		Event: evlog.Record,
		Note: func(appID, jobID, line string) {
			if w, err := ag.JobLog(appID, jobID); err == nil {
				w.WriteLine("gantry", []byte(line))
				w.Close()
			}
		}})
	backups := &service.Backups{Location: o.BackupRepo, LegacyKeyFile: filepath.Join(o.DataDir, "backup.key"),
		SSHDir: filepath.Join(o.DataDir, "backup-ssh"), ImportLimit: o.ImportLimit}
	if backups.Location == "" {
		backups.Location = filepath.Join(o.DataDir, "backups", "restic")
	}
	svc := service.New(service.Options{Store: st, Log: log, Cron: jobs, Images: bld, Backups: backups, MinBackupEvery: o.BackupMinEvery, Self: node.Name, DrainStatus: drains.Status, DrainPolicy: drainPolicy, Agent: agentAdapter{ag, st.View}, Builder: bld, Layout: lay, Exe: exe,
		CloudDomain: o.CloudDomain, MaxGears: o.MaxGears, Applied: rt, PlatformHosts: []string{o.Host, "localhost"},
		AliasVerification: o.AliasVerification, DNSResolver: o.DNSResolver, ReservedPorts: []int{httpPort, httpsPort, sshPort}, HTTPSPort: httpsPort, Events: evlog, Egress: enf,
		EgressRouter: egressAPI(egr), EgressPorts: ag.ApplyEgressRouterPorts, Cluster: clu.ops(), JoinFiles: joinFiles()})
	history := stats.New(stats.Options{Gather: mets.Registry, Gears: func() map[string]int {
		out := map[string]int{}
		st.View(func(tx *store.Tx) error {
			gears, err := store.ListGears(tx)
			for _, g := range gears {
				if g.Web() && g.State == store.GearRunning {
					out[store.AppName(g.AppKey)]++
				}
			}
			return err
		})
		return out
	}})
	apiHandler, err := api.New(api.Options{Service: svc, Stats: history, Runtimes: func() ([]runtimes.Runtime, []error) { return runtimes.Discover(runtimesDir, env.Path) },
		Layout: lay, Log: log, Agent: agentAdapter{ag, st.View}, Builder: bld, Exec: ag,
		CloudDomain: o.CloudDomain, AppURL: appURL, Version: o.Version,
		Doctor:       func() []apitypes.DoctorCheck { return doctor(hostOpts) },
		MigrateStore: (&liveMigration{o: &o, clustered: clu != nil, st: st, ho: ho, lay: lay, httpsPort: httpsPort, log: log}).run,
		GitSSHURL: func(d, a string) string {
			return fmt.Sprintf("ssh://git@%s:%d/%s/%s.git", o.Host, sshPort, d, a)
		},
		GitHTTPURL:  func(d, a string) string { return fmt.Sprintf("%s/git/%s/%s.git", serverURL, d, a) },
		SSHHostKeys: []string{knownHost + " " + hostKey},
		Router:      load, Metrics: mets.Handler(), Tunnels: serviceDialer{ag},
		CAView: api.NewCAView(ca), HTTPSPort: httpsPort, PublicHost: o.Host, JoinURL: joinURL(o, httpsPort), RemoteLogs: remoteLogs(clu, st, peers, node.Name),
		ACME: acmeIss != nil, TCPPorts: rt, Egress: enf, EgressRouter: egressAPI(egr),
	})
	mets.AppGauge("gantry_app_connections", "Live connections per app: requests in flight, WebSockets, held requests.", func() map[string]float64 {
		out := map[string]float64{}
		st.View(func(tx *store.Tx) error {
			apps, err := store.ListApps(tx)
			for _, a := range apps {
				out[a.FullName()] = float64(rt.Concurrency(a.Key()))
			}
			return err
		})
		return out
	})
	if err != nil {
		return err
	}
	if has(store.RoleControl) {
		con, err := console.New(console.Options{API: apiHandler, Log: log.With("component", "console"), Version: o.Version})
		if err != nil {
			return err
		}
		rt.Mount(withConsole(apiHandler, con))
	} else {
		rt.Mount(noControlAPI(st, node.Name))
	}

	if err := bootstrap(svc, o.ClientConfig, serverURL, log); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	reinstallHooks(st, lay, exe, log)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var peerSrv *peer.Server
	if clu != nil {
		if peerSrv, err = peer.NewServer(net.JoinHostPort(o.Advertise, strconv.Itoa(o.PeerPort)), clu.certs.CA.ServerTLS(clu.certs.Cert), ag,
			func(ctx context.Context, appID string, w io.Writer) error {
				return gitrepo.Bundle(ctx, lay.Repo(appID), w)
			}, log); err != nil {
			return err
		}
		node.Peer = peerSrv.Addr().String()
	}
	if err := svc.RegisterNode(node); err != nil {
		return err
	}
	if err := st.KeepAlive(ctx, node.Name, service.NodeTTL, func(err error) {
		log.Warn("this machine's presence lapsed: the others count it as down until the store confirms it again", "node", node.Name, "err", err)
	}); err != nil {
		return err
	}
	routesPub := routes.New(st, rt, log)
	if !has(store.RoleEdge) {
		routesPub.ServeNoApps()
	}
	if clu != nil {
		routesPub.FollowMachines()
	}
	if err := routesPub.Sync(); err != nil { // routes before the router serves
		return err
	}
	g := newGroup()
	g.log = log
	// A role that does not stop (a cluster's store out of reach at the
	// stop, or a bug) is named in the log and left behind rather than
	// holding the process: the gears run on without it.
	g.limit = [stages]time.Duration{stageDoors: o.DrainTimeout + 10*time.Second, stageControl: 10 * time.Second, stageNode: 10 * time.Second, stageState: 5 * time.Second}
	g.Go(stageState, "routes", routesPub)
	g.Go(stageNode, "agent", ag)
	g.Go(stageNode, "log drains", drains)
	g.Go(stageNode, "egress", enf)
	if has(store.RoleControl) {
		g.Go(stageControl, "builder", bld)
	}
	g.Go(stageControl, "autoscaler", scaler) // without control: it wakes idle apps only
	if has(store.RoleControl) {
		g.Go(stageControl, "traffic history", roleFunc(history.Run))
	}
	if clu != nil {
		g.Go(stageControl, "load reports", clusterLoad)
	}
	if has(store.RoleControl) && has(store.RoleNode) { // the jobs run in gears here
		g.Go(stageControl, "cron", jobs)
	}
	if has(store.RoleControl) {
		tick := 10 * time.Second
		if o.BackupMinEvery > 0 && o.BackupMinEvery < time.Minute {
			tick = o.BackupMinEvery / 2
		}
		g.Go(stageControl, "backups", roleFunc(func(ctx context.Context) error { return svc.RunBackups(ctx, node.Name, tick) }))
	}
	if clu != nil && has(store.RoleControl) {
		g.Go(stageControl, "autoscaler election", leading)
		g.Go(stageControl, "scheduler", &scheduler.Failover{Store: st, Self: node.Name, Grace: o.NodeGrace, Log: log,
			Scale: func(ctx context.Context, appKey string, n int) error { return ag.ScaleTo(ctx, appKey, n, io.Discard) },
			Moved: func(a *store.App, from string, n int, since time.Time) {
				evlog.Record(a, store.Event{Kind: events.Moved, From: n, To: n,
					Reason: fmt.Sprintf("%d gear(s) moved off %s, down since %s", n, from, since.Local().Format("15:04:05"))})
			}})
		g.Go(stageControl, "repositories", &gitrepo.Syncer{Store: st, Layout: lay, Node: node.Name, Exe: exe, Log: log,
			Fetch: func(ctx context.Context, from, appID string, w io.Writer) error {
				var n store.Node
				if err := st.View(func(tx *store.Tx) error { return tx.Get(store.NodeKey(from), &n) }); err != nil {
					return err
				}
				return peers.FetchRepo(ctx, n.Peer, appID, w)
			}})
	}
	if clu != nil {
		g.Go(stageDoors, "peer", peerSrv)
	}
	g.Go(stageDoors, "router", rt)
	g.Go(stageDoors, "sshd", ssh)
	if acmeIss != nil {
		g.Go(stageDoors, "acme", acmeIss)
	}
	<-ag.Ready()
	switch {
	case clu != nil && isolation == agent.Process && o.Advertise != "127.0.0.1":
		go redeployStrandedGears(ctx, st, ag, func(g store.Gear) bool { return g.Isolation != agent.Namespaces && g.IP == "127.0.0.1" }, log)
	case clu != nil && isolation == agent.Namespaces:
		go redeployStrandedGears(ctx, st, ag, func(g store.Gear) bool {
			ip, err := netip.ParseAddr(g.IP)
			return g.Isolation == agent.Namespaces && err == nil && !network.Block.Contains(ip)
		}, log)
	}
	if has(store.RoleControl) { // a restore a kill -9 interrupted: finished, or its half-made app removed
		go svc.ResumeRestores(ctx)
	}
	// After the agent: the gateway's address is on the bridge now.
	if dnsOpts != nil {
		dnsOpts.Learn = enf.LearnDNS
		g.Go(stageDoors, "dns", dns.New(*dnsOpts))
	}
	if egr != nil {
		g.Go(stageDoors, "egress router", egr)
	}
	hostOpts.Ports = map[string]string{"http": rt.Addr().String(), "ssh": ssh.Addr().String()}
	if a := rt.TLSAddr(); a != nil {
		hostOpts.Ports["https"] = a.String()
	}
	quick := *hostOpts
	quick.Quick = true
	log.Info(hostcheck.Summary(hostcheck.Run(quick)))
	log.Info("gantry is serving",
		"http", rt.Addr().String(), "ssh", ssh.Addr().String(), "https", addrOrOff(rt.TLSAddr()), "data", o.DataDir, "cloud_domain", o.CloudDomain,
		"isolation", why,
		"client_config", o.ClientConfig)
	if o.Ready != nil {
		o.Ready(rt.Addr(), ssh.Addr())
	}
	if err := ho.Ready(); err != nil {
		log.Error("telling the previous process this one serves", "err", err)
	} else if ho.Inherited() {
		log.Info("took over the listening sockets of the previous process")
	}
	// SIGHUP: a new process of the binary at the same path takes over
	// the sockets; once it serves, this one stops accepting, finishes its
	// open requests and tunnels (up to --drain-timeout) and exits. Gears
	// run on, as at any stop.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: starting a new process to take over")
				if err := ho.Upgrade(ctx); err != nil {
					log.Error("the new process did not take over; this one goes on serving", "err", err)
				}
			case <-ho.Done():
				log.Info("a new process serves now: finishing open requests", "drain_timeout", o.DrainTimeout)
				rt.SetDrainTimeout(o.DrainTimeout)
				cancel()
				return
			}
		}
	}()
	err = g.Wait(ctx)
	log.Info("gantry stopped; gears keep running")
	return err
}

// joinURL is where other machines join through: this one's router over
// HTTPS, at its advertised address.
func joinURL(o Options, httpsPort int) string {
	host := o.Advertise
	if host == "" {
		host = o.Host
	}
	return "https://" + host + portSuffix443(httpsPort)
}

func portSuffix443(port int) string {
	if port == 443 || port == 0 {
		return ""
	}
	return ":" + strconv.Itoa(port)
}

// platformHosts are the names and addresses the API answers on.
func platformHosts(o Options) []string {
	hosts := []string{o.Host, "127.0.0.1", "::1", "localhost"}
	if o.Advertise != "" {
		hosts = append(hosts, o.Advertise)
	}
	return hosts
}

// thisNode is what this machine says of itself as a node.
// thisNodeName is --node-name, or the host's name.
func thisNodeName(o Options) (string, error) {
	if o.NodeName != "" {
		return o.NodeName, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("naming this node: %w (pass --node-name)", err)
	}
	name, _, _ := strings.Cut(strings.ToLower(h), ".")
	return name, nil
}

func thisNode(o Options, isolation string) (store.Node, error) {
	name, err := thisNodeName(o)
	if err != nil {
		return store.Node{}, err
	}
	addr := o.Advertise
	if addr == "" {
		addr = "127.0.0.1"
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		return store.Node{}, fmt.Errorf("--advertise %q: not an IP address", addr)
	}
	return store.Node{Name: name, Address: addr, Roles: []string{store.RoleControl, store.RoleNode, store.RoleEdge},
		Version: o.Version, MemoryTotal: memTotal(), Isolation: isolation}, nil
}

// memTotal is the machine's memory in bytes (0 when unknown).
func memTotal() int64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// chooseIsolation resolves the isolation mode and says in words what it is.
func chooseIsolation(want string) (mode, why string, err error) {
	avail := sandbox.Available()
	switch want {
	case "", "auto":
		if avail == nil {
			return agent.Namespaces, "namespaces: each gear has its own network namespace and IP, Unix user, PID/mount/IPC/UTS namespaces and cgroup limits (runc)", nil
		}
		return agent.Process, "none: gears are plain processes on loopback (" + avail.Error() + "; run as root on Linux for namespaces)", nil
	case agent.Namespaces:
		if avail != nil {
			return "", "", fmt.Errorf("--isolation namespaces: %w", avail)
		}
		return agent.Namespaces, "namespaces: each gear has its own network namespace and IP, Unix user, PID/mount/IPC/UTS namespaces and cgroup limits (runc)", nil
	case agent.Process:
		return agent.Process, "none: gears are plain processes on loopback (--isolation process)", nil
	}
	return "", "", fmt.Errorf("--isolation %q: choose auto, namespaces or process", want)
}

func addrOrOff(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// parsePrefix takes a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR (10.0.0.0/8) or an address (192.0.2.7)")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// openAccessLog opens the router's access log: a file (0600: it holds
// client addresses), stderr for "-", nothing for "off".
func openAccessLog(path string, lay layout.Layout) (io.WriteCloser, error) {
	switch path {
	case "off":
		return nil, nil
	case "-":
		return nopCloser{os.Stderr}, nil
	case "":
		path = lay.AccessLog()
	}
	os.MkdirAll(filepath.Dir(path), 0o700)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the access log: %w (choose another with --access-log, or off)", err)
	}
	return f, nil
}

// egressLogPath is the egress router's access log beside the router's:
// the same choice of stderr, but its own file.
func egressLogPath(access string, lay layout.Layout) string {
	switch access {
	case "-", "off":
		return access
	case "":
		return lay.EgressLog()
	}
	return strings.TrimSuffix(access, filepath.Ext(access)) + "-egress" + filepath.Ext(access)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func portSuffix(port int) string {
	if port == 80 {
		return ""
	}
	return ":" + strconv.Itoa(port)
}

// bootstrap creates the first admin and the local CLI's configuration. On
// later starts it keeps the configuration pointing at this server.
func bootstrap(svc *service.Service, cfgPath, serverURL string, log *slog.Logger) error {
	cfg, err := config.Load(cfgPath)
	if err != nil && !errors.Is(err, config.ErrNone) {
		log.Warn("ignoring unreadable client config", "path", cfgPath, "err", err)
		cfg = nil
	}
	known := ""
	if cfg != nil {
		known = cfg.Token
	}
	tok, foreign, err := svc.Bootstrap(cfg != nil, known)
	switch {
	case err != nil:
		return err
	case foreign:
		log.Info("client config holds a token of another server; leaving it alone", "path", cfgPath)
		return nil
	case tok != "":
		log.Info("wrote an admin token to the client config; the CLI on this machine is configured", "client_config", cfgPath)
		return config.Save(cfgPath, &config.Config{Server: serverURL, Token: tok, User: "admin"})
	case cfg.Server != serverURL:
		cfg.Server = serverURL
		return config.Save(cfgPath, cfg)
	}
	return nil
}

func reinstallHooks(st *store.Store, lay layout.Layout, exe string, log *slog.Logger) {
	var apps []store.App
	st.View(func(tx *store.Tx) error {
		var err error
		apps, err = store.ListApps(tx)
		return err
	})
	for _, a := range apps {
		if _, err := os.Stat(filepath.Join(lay.Repo(a.ID), "HEAD")); err != nil {
			continue // another machine of the cluster has it; it is copied here after its next push
		}
		if err := gitrepo.InstallHook(lay.Repo(a.ID), exe); err != nil {
			log.Warn("installing git hook", "app", a.FullName(), "err", err)
		}
		if err := gitrepo.Configure(context.Background(), lay.Repo(a.ID)); err != nil {
			log.Warn("configuring git repository", "app", a.FullName(), "err", err)
		}
	}
}

// serviceDialer adapts the agent's DialService to sshd.
type serviceDialer struct{ a *agent.Agent }

func (d serviceDialer) DialService(user, addr string) (net.Conn, any, error) {
	return d.a.DialService(user, addr)
}

// agentAdapter gives the API the agent in the API's own types.
type agentAdapter struct {
	*agent.Agent
	storeView func(func(*store.Tx) error) error
}

func (a agentAdapter) Services(appKey, gearID string) ([]apitypes.ServiceView, error) {
	svcs, err := a.Agent.Services(appKey, gearID)
	out := make([]apitypes.ServiceView, len(svcs))
	for i, s := range svcs {
		out[i] = apitypes.ServiceView{Name: s.Name, Gear: s.Gear, IP: s.IP, Port: s.Port, Local: s.Local, Cartridge: s.Cartridge}
	}
	return out, err
}

func (a agentAdapter) AddCartridge(ctx context.Context, appKey string, c store.Cartridge) (string, int, error) {
	g, err := a.Agent.AddCartridge(ctx, appKey, c)
	if err != nil {
		return "", 0, err
	}
	return g.IP, g.Port, nil
}

func (a agentAdapter) CartridgeAddress(appKey, name string) (string, int, bool) {
	var ip string
	var port int
	var found bool
	a.storeView(func(tx *store.Tx) error {
		if g, err := store.ServiceGear(tx, appKey, name); err == nil {
			ip, port, found = g.IP, g.Port, true
		}
		return nil
	})
	return ip, port, found
}

func (a agentAdapter) Status(id string) api.GearStatus {
	s := a.Agent.Status(id)
	return api.GearStatus{PID: s.PID, Status: s.Status, Restarts: s.Restarts, LastExit: s.LastExit, Memory: s.Memory, CPU: s.CPU, OOMKills: s.OOMKills}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeGearResolvConf writes the resolv.conf namespaced gears see: the
// forwarder on the gateway, with the host's search domains and options.
// resolv.conf has no port: a forwarder off port 53 is not usable there.
func writeGearResolvConf(lay layout.Layout, hostConf string, fwd netip.AddrPort) (string, error) {
	if fwd.Port() != 53 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("# Written by gantry: gears resolve through the platform's DNS forwarder.\n")
	fmt.Fprintf(&b, "nameserver %s\n", fwd.Addr())
	if conf, err := os.ReadFile(hostConf); err == nil {
		for _, l := range strings.Split(string(conf), "\n") {
			if f := strings.Fields(l); len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
				b.WriteString(strings.TrimSpace(l) + "\n")
			}
		}
	}
	path := filepath.Join(lay.RunDir(), "gear-resolv.conf")
	os.MkdirAll(lay.RunDir(), 0o700)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("writing the gears' resolv.conf: %w", err)
	}
	return path, nil
}

// doctor runs the host checks for the API.
func doctor(o *hostcheck.Options) []apitypes.DoctorCheck {
	var out []apitypes.DoctorCheck
	for _, c := range hostcheck.Run(*o) {
		out = append(out, apitypes.DoctorCheck(c))
	}
	return out
}

// acmeFromFlags builds the issuer from the server's options.
// In a cluster the certificates live in the store (shared).
func acmeFromFlags(o Options, lay layout.Layout, shared certmagic.Storage, log *slog.Logger) (*acme.Issuer, error) {
	ao := acme.Options{Directory: o.ACMEDirectory, Email: o.ACMEEmail, Storage: lay.ACME(), Shared: shared}
	if o.ACMERoots != "" {
		pem, err := os.ReadFile(o.ACMERoots)
		if err != nil {
			return nil, fmt.Errorf("--acme-roots: %w", err)
		}
		ao.Roots = x509.NewCertPool()
		if !ao.Roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--acme-roots %s: no PEM certificates in it", o.ACMERoots)
		}
	}
	return acme.New(ao, log)
}

// listRuntimes is the language runtimes there are; trees that are not
// runtimes are logged.
func listRuntimes(dir, hostPath string, log *slog.Logger) []runtimes.Runtime {
	rts, problems := runtimes.Discover(dir, hostPath)
	for _, p := range problems {
		log.Warn("runtimes directory", "problem", p.Error())
	}
	return rts
}

// openStore opens the records' store: SQLite in the data directory, or
// etcd (--store etcd://…). The platform key that seals secrets stays in
// the data directory either way.
func openStore(o Options, lay layout.Layout) (*store.Store, error) {
	if o.Store == "" || o.Store == "sqlite" {
		st, err := store.Open(lay.DB())
		if err != nil {
			return nil, err
		}
		// The store holds secrets (env values, cartridge passwords): root only.
		for _, f := range []string{lay.DB(), lay.DB() + "-wal", lay.DB() + "-shm"} {
			os.Chmod(f, 0o600)
		}
		return st, nil
	}
	rest, ok := strings.CutPrefix(o.Store, "etcd://")
	if !ok || rest == "" {
		return nil, fmt.Errorf("--store %q: use etcd://HOST:PORT[,HOST:PORT…], or leave it out for SQLite in the data directory", o.Store)
	}
	cfg := clientv3.Config{DialTimeout: 3 * time.Second}
	scheme := "http://"
	if o.StoreCert != "" || o.StoreCA != "" {
		tlsCfg, err := storeTLS(o)
		if err != nil {
			return nil, err
		}
		cfg.TLS, scheme = tlsCfg, "https://"
	}
	for _, ep := range strings.Split(rest, ",") {
		cfg.Endpoints = append(cfg.Endpoints, scheme+strings.TrimSpace(ep))
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("--store %s: etcd does not answer at %s: %w", o.Store, strings.Join(cfg.Endpoints, ", "), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx, cfg.Endpoints[0]); err != nil {
		c.Close()
		return nil, fmt.Errorf("--store %s: etcd does not answer at %s: %w", o.Store, cfg.Endpoints[0], err)
	}
	st, err := store.New(store.NewEtcd(c, "/gantry/"), store.KeyFile(lay.DB()))
	if err != nil {
		c.Close()
		return nil, err
	}
	return st, nil
}

// storeTLS is the mutual TLS of an etcd store: the CA that signed etcd's
// certificate, and this server's client certificate.
func storeTLS(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.StoreCA != "" {
		pem, err := os.ReadFile(o.StoreCA)
		if err != nil {
			return nil, fmt.Errorf("--store-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--store-ca %s: no PEM certificate in it", o.StoreCA)
		}
	}
	if o.StoreCert != "" || o.StoreKey != "" {
		pair, err := tls.LoadX509KeyPair(o.StoreCert, o.StoreKey)
		if err != nil {
			return nil, fmt.Errorf("--store-cert/--store-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// withConsole serves the web console at /console/ beside the API.
func withConsole(api, con http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, "/console/") {
			con.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}
