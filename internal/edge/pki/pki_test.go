package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/youmark/pkcs8"
)

func TestCAChainAndConstraints(t *testing.T) {
	dir := t.TempDir()
	ca, err := Open(dir, "apps.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"root.key", "intermediate.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v; want 0600", f, fi.Mode().Perm())
		}
	}
	if !ca.inter.IsCA || ca.inter.MaxPathLen != 0 || !ca.inter.MaxPathLenZero {
		t.Errorf("intermediate: IsCA %v MaxPathLen %d zero %v; want CA with path length 0", ca.inter.IsCA, ca.inter.MaxPathLen, ca.inter.MaxPathLenZero)
	}
	if got := ca.inter.PermittedDNSDomains; len(got) != 1 || got[0] != "apps.test" {
		t.Errorf("name constraint %v; want [apps.test]", got)
	}
	c, err := ca.Certificate("blog-acme.apps.test")
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	inter.AddCert(ca.inter)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "blog-acme.apps.test", Roots: ca.Roots(), Intermediates: inter}); err != nil {
		t.Errorf("leaf does not verify against the root: %v", err)
	}
	if _, err := ca.Certificate("evil.example.com"); err == nil {
		t.Error("issued a certificate outside the cloud domain")
	}
	// Even a leaf signed by the intermediate for another name is refused
	// by verifiers: the constraint is in the chain, not just our code.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: serial(), DNSNames: []string{"bank.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca.inter, key.Public(), ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := x509.ParseCertificate(der)
	if _, err := rogue.Verify(x509.VerifyOptions{DNSName: "bank.example.com", Roots: ca.Roots(), Intermediates: inter}); err == nil {
		t.Error("a leaf outside the name constraint verified")
	}
	// The platform host gets loopback IP SANs.
	pc, err := ca.Certificate("apps.test", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: ca.Roots(), Intermediates: inter}); err != nil {
		t.Errorf("platform certificate for 127.0.0.1: %v", err)
	}

	again, err := Open(dir, "apps.test")
	if err != nil {
		t.Fatal(err)
	}
	if string(again.RootPEM()) != string(ca.RootPEM()) {
		t.Error("reopening made a new root")
	}
	moved, err := Open(dir, "other.test")
	if err != nil {
		t.Fatal(err)
	}
	if string(moved.RootPEM()) != string(ca.RootPEM()) || !moved.Covers("a.other.test") {
		t.Error("a new cloud domain should keep the root and re-issue the intermediate")
	}
}

// testChain makes a private root, an intermediate and a leaf for names.
type testChain struct {
	roots               *x509.CertPool
	leafPEM, interPEM   []byte
	keyPEM              []byte
	key                 *ecdsa.PrivateKey
	selfPEM, selfKeyPEM []byte
}

func newTestChain(t *testing.T, notAfter time.Time, names ...string) *testChain {
	t.Helper()
	mk := func(tmpl, parent *x509.Certificate, pub any, signer any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	now := time.Now()
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "Test Root"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(1000 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	root := mk(rt, rt, rk.Public(), rk)
	ik, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	it := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "Test Inter"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(1000 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	inter := mk(it, root, ik.Public(), rk)
	lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: now.Add(-24 * time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leaf := mk(lt, inter, lk.Public(), ik)
	st := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: now.Add(-24 * time.Hour), NotAfter: notAfter}
	self := mk(st, st, lk.Public(), lk)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	der, _ := x509.MarshalPKCS8PrivateKey(lk)
	enc := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &testChain{roots: pool, leafPEM: enc(leaf), interPEM: enc(inter), key: lk,
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), selfPEM: enc(self)}
}

func code(err error) string {
	var ce *CheckError
	if errors.As(err, &ce) {
		return ce.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestCheck(t *testing.T) {
	now := time.Now()
	good := newTestChain(t, now.Add(90*24*time.Hour), "shop.example.com", "www.shop.example.com")
	other := newTestChain(t, now.Add(90*24*time.Hour), "shop.example.com")
	soon := newTestChain(t, now.Add(10*24*time.Hour), "shop.example.com")
	old := newTestChain(t, now.Add(-time.Hour), "shop.example.com")
	wild := newTestChain(t, now.Add(90*24*time.Hour), "*.example.com")
	ecDER, _ := x509.MarshalECPrivateKey(good.key)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	p8enc, err := pkcs8.MarshalPrivateKey(good.key, []byte("s3cret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	p8PEM := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: p8enc})
	//lint:ignore SA1019 testing the legacy format users have
	legacy, err := x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", ecDER, []byte("s3cret"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	legacyPEM := pem.EncodeToMemory(legacy)
	chain := append(append([]byte{}, good.leafPEM...), good.interPEM...)

	cases := []struct {
		name     string
		u        Upload
		roots    *x509.CertPool
		wantCode string
		warn     string
	}{
		{"chain_ok", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: good.keyPEM}, good.roots, "", ""},
		{"second_name", Upload{Host: "WWW.shop.example.com.", Certificate: chain, PrivateKey: good.keyPEM}, good.roots, "", ""},
		{"sec1_key", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: ecPEM}, good.roots, "", ""},
		{"pkcs8_encrypted", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: p8PEM, Passphrase: "s3cret"}, good.roots, "", ""},
		{"legacy_encrypted", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: legacyPEM, Passphrase: "s3cret"}, good.roots, "", ""},
		{"encrypted_no_pass", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: p8PEM}, good.roots, "passphrase_required", ""},
		{"encrypted_wrong_pass", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: p8PEM, Passphrase: "nope"}, good.roots, "passphrase_wrong", ""},
		{"legacy_wrong_pass", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: legacyPEM, Passphrase: "nope"}, good.roots, "passphrase_wrong", ""},
		{"missing_intermediate", Upload{Host: "shop.example.com", Certificate: good.leafPEM, PrivateKey: good.keyPEM}, good.roots, "untrusted", ""},
		{"key_mismatch", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: other.keyPEM}, good.roots, "key_mismatch", ""},
		{"name_mismatch", Upload{Host: "blog.example.org", Certificate: chain, PrivateKey: good.keyPEM}, good.roots, "name_mismatch", ""},
		{"wildcard_covers", Upload{Host: "a.example.com", Certificate: append(wild.leafPEM, wild.interPEM...), PrivateKey: wild.keyPEM}, wild.roots, "", ""},
		{"wildcard_not_two_levels", Upload{Host: "a.b.example.com", Certificate: append(wild.leafPEM, wild.interPEM...), PrivateKey: wild.keyPEM}, wild.roots, "name_mismatch", ""},
		{"expired", Upload{Host: "shop.example.com", Certificate: append(old.leafPEM, old.interPEM...), PrivateKey: old.keyPEM}, old.roots, "expired", ""},
		{"expires_soon", Upload{Host: "shop.example.com", Certificate: append(soon.leafPEM, soon.interPEM...), PrivateKey: soon.keyPEM}, soon.roots, "", "expires in 9 days"},
		{"self_signed", Upload{Host: "shop.example.com", Certificate: good.selfPEM, PrivateKey: good.keyPEM}, good.roots, "untrusted", ""},
		{"self_signed_forced", Upload{Host: "shop.example.com", Certificate: good.selfPEM, PrivateKey: good.keyPEM, Force: true}, good.roots, "", "self-signed"},
		{"garbage_cert", Upload{Host: "shop.example.com", Certificate: []byte("hello"), PrivateKey: good.keyPEM}, good.roots, "pem_invalid", ""},
		{"garbage_key", Upload{Host: "shop.example.com", Certificate: chain, PrivateKey: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, good.roots, "pem_invalid", ""},
		{"key_in_cert_file", Upload{Host: "shop.example.com", Certificate: good.keyPEM, PrivateKey: good.keyPEM}, good.roots, "pem_invalid", ""},
		{"ca_first", Upload{Host: "shop.example.com", Certificate: append(good.interPEM, good.leafPEM...), PrivateKey: good.keyPEM}, good.roots, "key_mismatch", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Check(tc.u, tc.roots, now)
			if got := code(err); got != tc.wantCode {
				t.Fatalf("code %q (%v); want %q", got, err, tc.wantCode)
			}
			if err != nil {
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error repeats the passphrase: %v", err)
				}
				return
			}
			if c.Pair == nil || len(c.KeyPEM) == 0 {
				t.Fatal("no pair")
			}
			joined := strings.Join(c.Warnings, "; ")
			if tc.warn == "" && joined != "" {
				t.Errorf("warnings %q; want none", joined)
			}
			if tc.warn != "" && !strings.Contains(joined, tc.warn) {
				t.Errorf("warnings %q; want %q", joined, tc.warn)
			}
			// What is stored parses back (unencrypted) to the same pair.
			again, err := Check(Upload{Host: tc.u.Host, Certificate: c.CertPEM, PrivateKey: c.KeyPEM, Force: tc.u.Force}, tc.roots, now)
			if err != nil {
				t.Fatalf("stored form does not check: %v", err)
			}
			if string(again.Pair.Certificate[0]) != string(c.Pair.Certificate[0]) {
				t.Error("stored form differs")
			}
		})
	}
}

func FuzzCheck(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "example.com")
	f.Fuzz(func(t *testing.T, cert, key []byte, host string) {
		c, err := Check(Upload{Host: host, Certificate: cert, PrivateKey: key}, x509.NewCertPool(), time.Now())
		if err == nil && c.Pair == nil {
			t.Fatal("accepted without a pair")
		}
		if err != nil && code(err) == "" {
			t.Fatal("refusal without a code")
		}
	})
}

// The cluster sub-CA: node certificates work both ways in mutual TLS;
// an app certificate of the router's intermediate (same root) is no
// machine's; a machine with the root's certificate only (joined) opens
// its CA without making a new root.
func TestClusterCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := Open(dir, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := OpenCluster(dir)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := cl.NodeCert("m1", net.ParseIP("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := NodeOf(m1.Leaf); !ok || name != "m1" {
		t.Errorf("NodeOf: %q %v", name, ok)
	}
	opts := x509.VerifyOptions{Roots: cl.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := m1.Leaf.Verify(opts); err != nil {
		t.Errorf("a node certificate as a client: %v", err)
	}
	opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	opts.DNSName = "127.0.0.1"
	if _, err := m1.Leaf.Verify(opts); err != nil {
		t.Errorf("a node certificate as a server: %v", err)
	}
	app, err := ca.Certificate("blog.example.test")
	if err != nil {
		t.Fatal(err)
	}
	opts.DNSName = ""
	if _, err := app.Leaf.Verify(opts); err == nil {
		t.Error("an app certificate passes as a machine's")
	}

	// A joined machine: the cluster files only.
	joined := t.TempDir()
	for _, f := range ClusterFiles {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(joined, f), raw, 0o600)
	}
	ca2, err := Open(joined, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Root().Equal(ca.Root()) {
		t.Error("the joined machine made a root of its own")
	}
	if _, err := os.Stat(filepath.Join(joined, "root.key")); err == nil {
		t.Error("the joined machine has a root key")
	}
	cl2, err := OpenCluster(joined)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := cl2.NodeCert("m2")
	if err != nil {
		t.Fatal(err)
	}
	opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if _, err := m2.Leaf.Verify(opts); err != nil {
		t.Errorf("a certificate issued on the joined machine: %v", err)
	}
	if _, err := Open(joined, "other.test"); err == nil {
		t.Error("a joined machine made an issuing CA for another cloud domain")
	}
}
