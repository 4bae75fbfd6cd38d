package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The cluster's own traffic (etcd peers and clients, calls between
// machines) is mutual TLS with certificates of a second sub-CA under the
// platform root: "cluster", path length 0, constrained to the names
// NAME.node.gantry. Peers trust only that sub-CA, so no certificate the
// router's intermediate issues for an app (or a user uploads) passes as a
// machine.

const (
	nodeDomain       = "node.gantry"
	nodeCertValidity = 2 * 365 * 24 * time.Hour
)

// ClusterFiles are the files of the CA directory a machine that joins
// receives: the root's certificate (never its key), and both sub-CAs with
// their keys, so that any control machine issues app and node
// certificates.
var ClusterFiles = []string{"root.crt", "intermediate.crt", "intermediate.key", "cluster.crt", "cluster.key"}

// Cluster is the sub-CA of the platform's machines.
type Cluster struct {
	cert    *x509.Certificate
	key     crypto.Signer
	pool    *x509.CertPool
	certPEM []byte
}

// OpenCluster loads the cluster sub-CA from the CA directory, making it
// under the root on first use (which needs the root's key: a machine that
// joined has the sub-CA already).
func OpenCluster(dir string) (*Cluster, error) {
	cert, key, err := loadOrCreate(dir, "cluster", func() (*x509.Certificate, crypto.Signer, error) {
		root, rootKey, err := loadOrCreate(dir, "root", makeRoot)
		if err != nil {
			return nil, nil, err
		}
		return makeClusterCA(root, rootKey)
	})
	if err != nil {
		return nil, err
	}
	c := &Cluster{cert: cert, key: key, pool: x509.NewCertPool(),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}
	c.pool.AddCert(cert)
	return c, nil
}

func makeClusterCA(root *x509.Certificate, rootKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	if rootKey == nil {
		return nil, nil, errors.New("pki: this machine has the root's certificate only (it joined a cluster) and no cluster sub-CA: join again")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:                serial(),
		Subject:                     pkix.Name{CommonName: "Gantry Cluster CA", Organization: []string{"Gantry"}},
		NotBefore:                   now.Add(-time.Hour),
		NotAfter:                    now.Add(intermediateValidity),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:                 []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{nodeDomain},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: making the cluster sub-CA: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// Pool trusts the cluster sub-CA only.
func (c *Cluster) Pool() *x509.CertPool { return c.pool }

// CertPEM is the sub-CA's certificate (etcd's trusted CA file).
func (c *Cluster) CertPEM() []byte { return c.certPEM }

// NodeCert issues a machine's certificate: client and server, for
// NAME.node.gantry and its addresses.
func (c *Cluster) NodeCert(name string, ips ...net.IP) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	host := name + "." + nodeDomain
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host, Organization: []string{"Gantry"}},
		DNSNames:     []string{host},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(nodeCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("pki: issuing the certificate of node %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// NodeOf is the machine a verified cluster certificate names.
func NodeOf(cert *x509.Certificate) (string, bool) {
	return strings.CutSuffix(cert.Subject.CommonName, "."+nodeDomain)
}

// WriteNodeCert keeps a node certificate (with the sub-CA's in its chain)
// and key in PEM files, the key 0600 (etcd reads files).
func WriteNodeCert(cert *tls.Certificate, certFile, keyFile string) error {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	var chain []byte
	for _, c := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, chain, 0o644)
}

// ServerTLS is the configuration of a machine's cluster listener: its
// certificate, and client certificates of the cluster sub-CA required.
func (c *Cluster) ServerTLS(cert *tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.pool, MinVersion: tls.VersionTLS13}
}

// ClientTLS is the configuration of a machine calling another: its own
// certificate, the other's checked against the cluster sub-CA.
func (c *Cluster) ClientTLS(cert *tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: c.pool, MinVersion: tls.VersionTLS13}
}
