// Package cluster makes a machine part of a cluster: the embedded etcd
// member that holds the records (started with --cluster-init, or as one
// of the first three machines that join), the client of etcd every
// machine uses, what a machine keeps of its membership in its data
// directory (cluster.json), and the joining side of a join (the platform's
// side is control/service's). Everything between machines is mutual TLS
// with certificates of the platform CA's cluster sub-CA.
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/gantry-paas/gantry/internal/edge/pki"
)

// MaxMembers is how many machines hold etcd members; later joiners use
// them as clients.
const MaxMembers = 3

// State is what a machine keeps of its membership (DATA/cluster.json).
type State struct {
	Name      string `json:"name"`
	Advertise string `json:"advertise"`
	// Member: this machine runs an etcd member (in DATA/etcd).
	Member     bool `json:"member"`
	ClientPort int  `json:"client_port"`
	PeerPort   int  `json:"peer_port"`
	// Endpoints are the members' client URLs.
	Endpoints []string `json:"endpoints"`
	// CloudDomain is the cluster's (every machine serves the same).
	CloudDomain string `json:"cloud_domain"`
}

// PendingInit is a live move of a machine that runs alone into a new
// cluster (gantry admin store migrate): the process that takes over
// starts the cluster as --cluster-init would, with these settings.
type PendingInit struct {
	Advertise string `json:"advertise"`
	NodeName  string `json:"node_name,omitempty"`
}

// PendingInitPath is where it waits for the next process.
func PendingInitPath(dataDir string) string { return filepath.Join(dataDir, "cluster-init.json") }

// LoadPendingInit reads it (nil when none).
func LoadPendingInit(dataDir string) (*PendingInit, error) {
	raw, err := os.ReadFile(PendingInitPath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p PendingInit
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", PendingInitPath(dataDir), err)
	}
	return &p, nil
}

// Save writes it for the next process.
func (p *PendingInit) Save(dataDir string) error {
	raw, _ := json.Marshal(p)
	return os.WriteFile(PendingInitPath(dataDir), raw, 0o600)
}

// MemberDir is where the machine's etcd member keeps its data.
func MemberDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// StatePath is where a machine keeps its State.
func StatePath(dataDir string) string { return filepath.Join(dataDir, "cluster.json") }

// Load reads the State (nil, nil when the machine is in no cluster).
func Load(dataDir string) (*State, error) {
	raw, err := os.ReadFile(StatePath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", StatePath(dataDir), err)
	}
	return &s, nil
}

// Save writes the State atomically.
func (s *State) Save(dataDir string) error {
	raw, _ := json.MarshalIndent(s, "", "  ")
	tmp := StatePath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, StatePath(dataDir))
}

// ClientURL and PeerURL are this machine's etcd URLs.
func (s *State) ClientURL() string {
	return "https://" + net.JoinHostPort(s.Advertise, strconv.Itoa(s.ClientPort))
}
func (s *State) PeerURL() string {
	return "https://" + net.JoinHostPort(s.Advertise, strconv.Itoa(s.PeerPort))
}

// Certs are a machine's cluster credentials as files (etcd reads files).
type Certs struct {
	CA   *pki.Cluster
	Cert *tls.Certificate
	// CertFile, KeyFile and CAFile hold the same for etcd.
	CertFile, KeyFile, CAFile string
}

// NodeCerts issues (each start) the machine's certificate for its name and
// address and writes the files etcd reads, under DATA/pki.
func NodeCerts(pkiDir, name, advertise string) (*Certs, error) {
	ca, err := pki.OpenCluster(pkiDir)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(advertise)
	if ip == nil {
		return nil, fmt.Errorf("--advertise %q: not an IP address", advertise)
	}
	cert, err := ca.NodeCert(name, ip, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	c := &Certs{CA: ca, Cert: cert, CertFile: filepath.Join(pkiDir, "node.crt"), KeyFile: filepath.Join(pkiDir, "node.key"),
		CAFile: filepath.Join(pkiDir, "cluster.crt")}
	if err := pki.WriteNodeCert(cert, c.CertFile, c.KeyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// Member is an embedded etcd member.
type Member struct{ e *embed.Etcd }

// StartMember starts this machine's etcd member: a new cluster of one
// (initial == ""), or a member added to a running cluster (initial is
// etcd's initial-cluster string, NAME=PEERURL,…). A member that has data
// already rejoins with it. It returns once the member serves.
func StartMember(dataDir string, s *State, c *Certs, initial string) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Name = s.Name
	cfg.Dir = MemberDir(dataDir)
	cfg.LogLevel = "error"
	client, err := url.Parse(s.ClientURL())
	if err != nil {
		return nil, err
	}
	peer, err := url.Parse(s.PeerURL())
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile, cfg.ClientTLSInfo.TrustedCAFile = c.CertFile, c.KeyFile, c.CAFile
	cfg.ClientTLSInfo.ClientCertAuth = true
	cfg.PeerTLSInfo.CertFile, cfg.PeerTLSInfo.KeyFile, cfg.PeerTLSInfo.TrustedCAFile = c.CertFile, c.KeyFile, c.CAFile
	cfg.PeerTLSInfo.ClientCertAuth = true
	cfg.AutoCompactionMode, cfg.AutoCompactionRetention = "periodic", "1h"
	cfg.InitialClusterToken = "gantry"
	if initial == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ClusterState = embed.ClusterStateFlagNew
	} else {
		cfg.InitialCluster = initial
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting this machine's etcd member: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("this machine's etcd member: %w", err)
	case <-time.After(2 * time.Minute):
		e.Close()
		return nil, errors.New("this machine's etcd member did not join its cluster in 2 minutes: are the other members up and reachable on their peer ports?")
	}
	return &Member{e: e}, nil
}

// Close stops the member.
func (m *Member) Close() { m.e.Close() }

// Client connects to the cluster's members with this machine's
// certificate, from its advertised address (so that the other machines
// see it come from there, and a machine cut off is cut off whole).
func Client(endpoints []string, c *Certs, advertise string) (*clientv3.Client, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if ip := net.ParseIP(advertise); ip != nil && !ip.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	dial := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) })
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: c.CA.ClientTLS(c.Cert), DialOptions: []grpc.DialOption{dial},
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second, AutoSyncInterval: 30 * time.Second,
		Logger: zap.NewNop()}) // its retries are logged as JSON; the store's errors say what failed
}

// Members manages the etcd members through a client.
type Members struct{ C *clientv3.Client }

// Add adds a member at peerURL (before it starts) and returns the
// initial-cluster string it starts with and the members' client URLs.
func (m Members) Add(ctx context.Context, name, peerURL string) (initial string, endpoints []string, err error) {
	resp, err := m.C.MemberAdd(ctx, []string{peerURL})
	if err != nil {
		return "", nil, fmt.Errorf("adding an etcd member: %w", err)
	}
	for _, mem := range resp.Members {
		n := mem.Name
		if mem.ID == resp.Member.ID {
			n = name
		}
		for _, p := range mem.PeerURLs {
			if initial != "" {
				initial += ","
			}
			initial += n + "=" + p
		}
		endpoints = append(endpoints, mem.ClientURLs...)
	}
	return initial, endpoints, nil
}

// Count is how many members the cluster has.
func (m Members) Count(ctx context.Context) (int, error) {
	resp, err := m.C.MemberList(ctx)
	if err != nil {
		return 0, err
	}
	return len(resp.Members), nil
}

// Endpoints are the members' client URLs.
func (m Members) Endpoints(ctx context.Context) ([]string, error) {
	resp, err := m.C.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mem := range resp.Members {
		out = append(out, mem.ClientURLs...)
	}
	return out, nil
}

// Remove removes the member named name, if there is one.
func (m Members) Remove(ctx context.Context, name string) error {
	resp, err := m.C.MemberList(ctx)
	if err != nil {
		return err
	}
	for _, mem := range resp.Members {
		if mem.Name == name {
			_, err := m.C.MemberRemove(ctx, mem.ID)
			return err
		}
	}
	return nil
}
