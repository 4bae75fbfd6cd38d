package server

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gantry-paas/gantry/internal/control/builder"

	"github.com/spf13/cobra"
)

// Command is `gantry server`.
func Command(version string) *cobra.Command {
	var o Options
	var debug bool
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Gantry server (every role, embedded defaults)",
		Long: `Runs every role of Gantry in this process: API, router, SSH/git endpoint,
builder and agent. With no flags: data in /var/lib/gantry (as root) or
~/.local/share/gantry, router on :80 (root) or :8080, SSH on :2222, apps at
NAME-DOMAIN.localhost. The first start creates the admin user and configures
the CLI on this machine. SIGTERM stops the server; apps keep running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			o.Version = version
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data", "", "data directory")
	f.StringVar(&o.HTTPListen, "http", "", "router address (default :80 as root, else :8080)")
	f.StringVar(&o.HTTPSListen, "https", "", "router TLS address (default :443 as root, else :8443; off for none)")
	f.BoolVar(&o.HTTP3, "http3", true, "serve HTTP/3 (QUIC) on the HTTPS port's UDP twin, advertised with Alt-Svc (0-RTT off)")
	f.StringSliceVar(&o.TrustedProxies, "trusted-proxy", nil, "address or CIDR of a proxy in front of Gantry whose X-Forwarded-* headers are kept (repeatable)")
	f.StringVar(&o.AccessLog, "access-log", "", "router access log file (default DATA/logs/access.log; - for stderr, off for none)")
	f.DurationVar(&o.HeaderTimeout, "header-timeout", 10*time.Second, "time a client has to send its request headers (and TLS handshake)")
	f.DurationVar(&o.TunnelTimeout, "tunnel-timeout", time.Hour, "idle WebSocket and TCP route connections are closed after this")
	f.IntVar(&o.MaxHeaderBytes, "max-header-bytes", 64<<10, "largest request header accepted (431 above)")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 30*time.Second, "after a SIGHUP hand-off, how long the old process lets open requests, WebSockets and TCP connections finish (a plain stop gives them 5s)")
	f.StringVar(&o.PIDFile, "pid-file", "", "write the pid of the serving process here (it changes when SIGHUP hands over to a new process)")
	f.StringVar(&o.Store, "store", "", "where the records are kept: SQLite in the data directory (default), or etcd://HOST:PORT[,HOST:PORT…] for an etcd you run")
	f.StringVar(&o.StoreCA, "store-ca", "", "the CA of the etcd store's certificate (https to etcd)")
	f.StringVar(&o.StoreCert, "store-cert", "", "this server's client certificate for the etcd store")
	f.StringVar(&o.StoreKey, "store-key", "", "the key of --store-cert")
	f.StringVar(&o.NodeName, "node-name", "", "this machine's name among the platform's nodes (default: the host name)")
	f.StringVar(&o.Advertise, "advertise", "", "the address other machines reach this one at (default 127.0.0.1: one machine)")
	f.BoolVar(&o.ClusterInit, "cluster-init", false, "start a cluster: this machine runs its first etcd member (with --advertise); the records of a machine that ran alone move into it; then `gantry node token` lets others join")
	f.StringVar(&o.Join, "join", "", "join the cluster of the platform at this HTTPS URL (with --token and --advertise)")
	f.StringVar(&o.JoinToken, "token", "", "the join token (`gantry node token` on a machine of the cluster)")
	f.IntVar(&o.PeerPort, "peer-port", 7443, "the cluster port on the advertised address: machines' agents reach each other there (mutual TLS)")
	f.DurationVar(&o.NodeGrace, "node-grace", 20*time.Second, "how long a machine may be down before its gears start on the others (they leave the routers at once)")
	f.IntVar(&o.EtcdClientPort, "etcd-client-port", 2379, "port of this machine's etcd member for clients, on the advertised address")
	f.IntVar(&o.EtcdPeerPort, "etcd-peer-port", 2380, "port of this machine's etcd member for its peers, on the advertised address")
	f.StringVar(&o.RuntimesDir, "runtimes", "", "directory of language runtimes, trees named node-22, python-3.11, go-1.26 (default DATA/runtimes); the host's toolchains count too")
	f.Int64Var(&o.BuildMemory, "build-memory", 2<<30, "memory limit of an app's build steps, in bytes (namespaced gears; builds are not bound by the app's gear size); 0: the gear size's")
	f.Int64Var(&o.MaxPushBytes, "max-push-size", builder.DefaultMaxPush, "largest pack a git push may send, in bytes (git refuses a larger one before storing anything)")
	f.StringVar(&o.ResolvConf, "resolv-conf", "", "the host's resolver configuration (default /etc/resolv.conf): its nameservers, a loopback stub such as systemd-resolved's included, are the DNS forwarder's upstreams, through which namespaced gears resolve")
	f.StringVar(&o.DiskLimits, "disk-limits", "auto", "each app's files on a filesystem of its own sized by its gear size (small 1 GiB, medium 2 GiB, large 4 GiB): auto (as root with loop devices) or off")
	f.StringVar(&o.AliasVerification, "alias-verification", "auto", "when users must prove they control a DNS name (TXT record, or an admin's grant) before using its hostnames as aliases: auto (once the platform has several users), dns (always) or off")
	f.StringVar(&o.DNSResolver, "dns-resolver", "", "resolver (HOST:PORT) for the TXT lookups of alias claims (default: the system's)")
	f.IntVar(&o.MaxClientConns, "max-client-conns", 1000, "connections one client address may hold open on the router's ports at once (trusted proxies exempt; 0: no cap)")
	f.IntVar(&o.MaxGearConns, "max-gear-conns", 1000, "connections one gear may hold open through the egress router at once (0: no cap)")
	f.DurationVar(&o.HealthInterval, "health-interval", 2*time.Second, "how often TCP route members are health-checked")
	f.StringVar(&o.ACMEDirectory, "acme-directory", "", "ACME directory URL that issues certificates for aliases without an uploaded one (e.g. Let's Encrypt)")
	f.StringVar(&o.ACMEEmail, "acme-email", "", "contact address of the ACME account")
	f.StringVar(&o.ACMERoots, "acme-roots", "", "PEM file with the roots the ACME directory is served with (test CAs)")
	f.StringVar(&o.SSHListen, "ssh", "", "SSH address (default :2222)")
	f.StringVar(&o.CloudDomain, "cloud-domain", "", "suffix of app hostnames (default localhost)")
	f.StringVar(&o.Host, "host", "", "this machine's name in git and API URLs (default localhost)")
	f.StringVar(&o.ClientConfig, "client-config", "", "where to write the local CLI's configuration")
	f.DurationVar(&o.StartTimeout, "start-timeout", 0, "how long a new gear has to listen on $PORT (default 60s)")
	f.StringVar(&o.Isolation, "isolation", "auto", "gear isolation: auto (namespaces when possible), namespaces, or process")
	f.StringVar(&o.EgressDefault, "egress-default", "allow", "outbound connections no rule of an app matches: allow or deny")
	f.IntVar(&o.ScanDistinct, "egress-scan-distinct", 20, "a port scan is this many distinct refused destinations of one app...")
	f.DurationVar(&o.ScanWindow, "egress-scan-window", time.Minute, "...within this window")
	f.BoolVar(&o.EgressPrivate, "egress-private", false, "let gears reach link-local and private networks (169.254.0.0/16, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10) through the host; by default they never do, whatever an app's policy")
	f.BoolVar(&o.ScanBlock, "egress-scan-block", false, "cut the outbound traffic of an app flagged for a port scan until `gantry admin egress clear APP`")
	f.IntVar(&o.EgressProxyPort, "egress-proxy-port", 3128, "the egress router's HTTP proxy port on the gear network's gateway; its 16 redirect ports follow it")
	f.IntVar(&o.EgressDNSPort, "egress-dns-port", 53, "the DNS forwarder's port on the gear network's gateway (apps with hostname egress rules resolve through it)")
	f.StringSliceVar(&o.EgressDNSUpstream, "egress-dns-upstream", nil, "resolvers the DNS forwarder and hostname rules use, HOST:PORT (default: the nameservers of /etc/resolv.conf)")
	f.StringVar(&o.EgressLabels, "egress-labels", "", "JSON file of egress port labels over the built-in ones, e.g. {\"kafka\": [\"9092/tcp\"]}")
	f.StringVar(&o.GearSubnet, "gear-subnet", "", "subnet of namespaced gears (default 10.88.0.0/16)")
	f.StringVar(&o.Roles, "roles", "control,node,edge", "what this machine does in a cluster: control (API, SSH/git, builds, scheduler, autoscaler), node (gears), edge (the router for apps); a list")
	f.StringVar(&o.Overlay, "overlay", "auto", "how namespaced gears reach other machines' gears in a cluster: auto (WireGuard where the kernel has it, else VXLAN), wireguard (encrypted) or vxlan (in the clear)")
	f.StringVar(&o.NetPrefix, "net-prefix", "", "name prefix of the gear bridge, namespaces and nftables tables (default gantry)")
	f.IntVar(&o.MaxGears, "max-gears", 16, "most gears one app may have")
	f.DurationVar(&o.WakeTimeout, "wake-timeout", 30*time.Second, "how long a request waits for an idle app to wake before a 503")
	f.DurationVar(&o.CronMinute, "cron-minute", time.Minute, "how long a minute of the apps' cron schedules lasts (for tests: 2s runs \"* * * * *\" every 2 s)")
	f.MarkHidden("cron-minute")
	f.StringVar(&o.BackupRepo, "backup-repo", "", "where apps' snapshots go until an admin sets a target (`gantry admin backup target set`): a restic repository in a directory, sftp://user@host/path or rest:https://… (default DATA/backups/restic)")
	f.Int64Var(&o.ImportLimit, "snapshot-import-limit", 20<<30, "the most bytes an imported snapshot archive may unpack to")
	f.DurationVar(&o.BackupMinEvery, "backup-min-every", time.Hour, "the shortest backup schedule an app may have (tests shorten it)")
	f.MarkHidden("backup-min-every")
	f.StringSliceVar(&o.InsecureRegistries, "insecure-registry", nil, "an image registry (host:port) reached over plain HTTP, e.g. one on a private network (repeatable)")
	f.BoolVar(&o.DrainAllowLoopback, "drain-allow-loopback", false, "let log drains reach loopback addresses (tests)")
	f.MarkHidden("drain-allow-loopback")
	f.DurationVar(&o.DrainRetry, "drain-retry", 250*time.Millisecond, "a log drain's first back-off after a failure (it doubles up to 10s)")
	f.MarkHidden("drain-retry")
	f.DurationVar(&o.ScaleDownAfter, "scale-down-after", 30*time.Second, "how long load must stay low before the autoscaler removes a gear")
	f.BoolVar(&debug, "debug", false, "verbose logs")
	return cmd
}
