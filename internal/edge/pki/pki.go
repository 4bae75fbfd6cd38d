// Package pki is the platform's certificate authority: a root CA and an
// intermediate (sub-CA, path length 0, name-constrained to the cloud
// domain) that issues the router's certificates for canonical app names.
// It also checks certificates users upload (see Check) before anything uses
// them.
//
// The CA lives in one directory: root.crt, root.key, intermediate.crt,
// intermediate.key, keys 0600. It must not serve TLS itself or know about
// apps: the router asks it for certificates by name.
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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Validity of what the CA makes.
const (
	rootValidity         = 20 * 365 * 24 * time.Hour
	intermediateValidity = 10 * 365 * 24 * time.Hour
	leafValidity         = 90 * 24 * time.Hour
	// A cached leaf is reissued when it has less than this left.
	leafRenewBefore = 30 * 24 * time.Hour
)

// CA is the platform root and its issuing intermediate.
type CA struct {
	cloud        string
	root         *x509.Certificate
	rootPEM      []byte
	inter        *x509.Certificate
	interKey     crypto.Signer
	interDER     []byte
	roots        *x509.CertPool
	mu           sync.Mutex
	leaves       map[string]*tls.Certificate
	leafValidity time.Duration
}

// Open loads the CA from dir, creating it on first use. cloudDomain is the
// domain the intermediate may issue for (its name constraint).
func Open(dir, cloudDomain string) (*CA, error) {
	cloudDomain = strings.ToLower(strings.TrimSuffix(cloudDomain, "."))
	if cloudDomain == "" {
		return nil, errors.New("pki: a cloud domain is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: creating %s: %w", dir, err)
	}
	rootCert, rootKey, err := loadOrCreate(dir, "root", func() (*x509.Certificate, crypto.Signer, error) {
		return makeRoot()
	})
	if err != nil {
		return nil, err
	}
	inter, interKey, err := loadOrCreate(dir, "intermediate", func() (*x509.Certificate, crypto.Signer, error) {
		return makeIntermediate(rootCert, rootKey, cloudDomain)
	})
	if err != nil {
		return nil, err
	}
	if !constrainedTo(inter, cloudDomain) {
		if rootKey == nil {
			return nil, fmt.Errorf("pki: the issuing CA is not for the cloud domain %s and this machine has no root key to make one: give every machine of a cluster the same --cloud-domain", cloudDomain)
		}
		// The cloud domain changed: the old intermediate cannot issue for
		// it. Make a new one under the same root (users keep trusting it).
		if inter, interKey, err = makeIntermediate(rootCert, rootKey, cloudDomain); err != nil {
			return nil, err
		}
		if err := save(dir, "intermediate", inter, interKey); err != nil {
			return nil, err
		}
	}
	ca := &CA{cloud: cloudDomain, root: rootCert, inter: inter, interKey: interKey, interDER: inter.Raw,
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootCert.Raw}),
		roots:   x509.NewCertPool(), leaves: map[string]*tls.Certificate{}, leafValidity: leafValidity}
	ca.roots.AddCert(rootCert)
	return ca, nil
}

// RootPEM is the root certificate users trust.
func (ca *CA) RootPEM() []byte { return ca.rootPEM }

// Root is the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Roots is a pool with only the platform root.
func (ca *CA) Roots() *x509.CertPool { return ca.roots }

// CloudDomain is the domain the CA issues for.
func (ca *CA) CloudDomain() string { return ca.cloud }

// Covers reports whether the CA may issue for host: the cloud domain and
// names beneath it.
func (ca *CA) Covers(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == ca.cloud || strings.HasSuffix(host, "."+ca.cloud)
}

// Certificate returns a certificate for host signed by the intermediate
// (the chain included), issuing it on first use and again when it nears
// expiry. ips are added as IP SANs (for the platform host).
func (ca *CA) Certificate(host string, ips ...net.IP) (*tls.Certificate, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !ca.Covers(host) {
		return nil, fmt.Errorf("pki: %s is outside the cloud domain %s: the platform CA cannot issue for it", host, ca.cloud)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.leaves[host]; c != nil && time.Until(c.Leaf.NotAfter) > leafRenewBefore {
		return c, nil
	}
	c, err := ca.issue(host, ips)
	if err != nil {
		return nil, err
	}
	ca.leaves[host] = c
	return c, nil
}

func (ca *CA) issue(host string, ips []net.IP) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ca.leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, key.Public(), ca.interKey)
	if err != nil {
		return nil, fmt.Errorf("pki: issuing for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.interDER}, PrivateKey: key, Leaf: leaf}, nil
}

func makeRoot() (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Gantry Root CA (" + host + ")", Organization: []string{"Gantry"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: making the root: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func makeIntermediate(root *x509.Certificate, rootKey crypto.Signer, cloud string) (*x509.Certificate, crypto.Signer, error) {
	if rootKey == nil {
		return nil, nil, errors.New("pki: this machine has the root's certificate only (it joined a cluster) and no issuing CA: join again")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:                serial(),
		Subject:                     pkix.Name{CommonName: "Gantry Issuing CA for " + cloud, Organization: []string{"Gantry"}},
		NotBefore:                   now.Add(-time.Hour),
		NotAfter:                    now.Add(intermediateValidity),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:                 []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true, // without it, 0 means unlimited
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{cloud},
		// IP SANs only for loopback (the platform host on this machine).
		PermittedIPRanges: []*net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: making the intermediate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func constrainedTo(c *x509.Certificate, cloud string) bool {
	return len(c.PermittedDNSDomains) == 1 && c.PermittedDNSDomains[0] == cloud && time.Until(c.NotAfter) > 0
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func loadOrCreate(dir, name string, make func() (*x509.Certificate, crypto.Signer, error)) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("pki: %s: %w (move the directory %s away to make a new CA; users must then trust the new root)", certPath, err, dir)
		}
		os.Chmod(keyPath, 0o600)
		return pair.Leaf, pair.PrivateKey.(crypto.Signer), nil
	}
	if !errors.Is(cerr, os.ErrNotExist) && cerr != nil {
		return nil, nil, fmt.Errorf("pki: %w", cerr)
	}
	if cerr == nil && errors.Is(kerr, os.ErrNotExist) && name == "root" {
		// A machine that joined a cluster has the root's certificate
		// only: it trusts the root and cannot make sub-CAs.
		block, _ := pem.Decode(certPEM)
		if block == nil {
			return nil, nil, fmt.Errorf("pki: %s holds no certificate", certPath)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		return c, nil, err
	}
	cert, key, err := make()
	if err != nil {
		return nil, nil, err
	}
	return cert, key, save(dir, name, cert, key)
}

func save(dir, name string, cert *x509.Certificate, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, name+".key")
	tmp := keyPath + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("pki: writing %s: %w", keyPath, err)
	}
	if err := os.Rename(tmp, keyPath); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}
