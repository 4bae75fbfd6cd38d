package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/youmark/pkcs8"
)

// ExpiryWarning is how close to expiry an uploaded certificate is warned
// about.
const ExpiryWarning = 30 * 24 * time.Hour

// Upload is a certificate a user sends for a hostname.
type Upload struct {
	Host        string
	Certificate []byte // PEM: the leaf first, then its chain
	PrivateKey  []byte // PEM: PKCS#1, PKCS#8 or SEC 1, maybe encrypted
	Passphrase  string
	// Force accepts a chain that does not verify against public roots
	// (self-signed, a private CA).
	Force bool
}

// Checked is an upload that passed: the pair to serve, normalised PEM to
// store (key decrypted: the store is root-only), and warnings for the user.
type Checked struct {
	Pair       *tls.Certificate
	CertPEM    []byte
	KeyPEM     []byte
	NotAfter   time.Time
	Names      []string
	Issuer     string
	Warnings   []string
	SelfSigned bool
}

// CheckError is a refused upload; Code is stable for clients.
type CheckError struct {
	Code string
	Msg  string
}

func (e *CheckError) Error() string { return e.Msg }

func refuse(code, format string, args ...any) error {
	return &CheckError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Check validates an upload before anything replaces a working certificate:
// PEM that parses, a key that matches the leaf, a chain that verifies
// (against roots; nil means the system's), names that cover the host, and
// dates. It is a pure function of its inputs and now.
func Check(u Upload, roots *x509.CertPool, now time.Time) (*Checked, error) {
	host := strings.ToLower(strings.TrimSuffix(u.Host, "."))
	certs, err := parseCerts(u.Certificate)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(u.PrivateKey, u.Passphrase)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if !samePublicKey(leaf.PublicKey, key) {
		return nil, refuse("key_mismatch", "the private key does not belong to the certificate (its public key differs): send the key the certificate was issued for")
	}
	if leaf.IsCA {
		return nil, refuse("not_a_leaf", "the first certificate in the file is a CA certificate: put the server's own certificate first, then its chain")
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return nil, refuse("name_mismatch", "the certificate does not cover %s: it is for %s", host, strings.Join(namesOf(leaf), ", "))
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, refuse("expired", "the certificate expired on %s: renew it and upload the new one", leaf.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(leaf.NotBefore):
		return nil, refuse("not_yet_valid", "the certificate is valid only from %s: check the issuing machine's clock", leaf.NotBefore.UTC().Format(time.DateTime))
	}
	c := &Checked{NotAfter: leaf.NotAfter, Names: namesOf(leaf), Issuer: leaf.Issuer.String()}
	if left := leaf.NotAfter.Sub(now); left < ExpiryWarning {
		c.Warnings = append(c.Warnings, fmt.Sprintf("the certificate expires in %d days (%s): renew it soon", int(left.Hours()/24), leaf.NotAfter.UTC().Format(time.DateOnly)))
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now})
	if verr != nil {
		var ua x509.UnknownAuthorityError
		c.SelfSigned = bytes.Equal(leaf.RawIssuer, leaf.RawSubject)
		what := "its chain does not verify against the trusted roots"
		if c.SelfSigned {
			what = "it is self-signed"
		}
		if !errors.As(verr, &ua) {
			return nil, refuse("chain_invalid", "the certificate chain is not valid: %v", verr)
		}
		if !u.Force {
			return nil, refuse("untrusted", "browsers will not trust this certificate: %s (%v). Add the intermediate certificates after the leaf in the file, or pass --force to use it anyway", what, verr)
		}
		c.Warnings = append(c.Warnings, "browsers will not trust this certificate: "+what+" (accepted with --force)")
	}
	var chain [][]byte
	var certPEM bytes.Buffer
	for _, cc := range certs {
		chain = append(chain, cc.Raw)
		pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: cc.Raw})
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, refuse("key_unsupported", "the private key type is not supported: use RSA, ECDSA or Ed25519")
	}
	c.CertPEM = certPEM.Bytes()
	c.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	c.Pair = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	return c, nil
}

func namesOf(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return []string{"no names"}
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if strings.Contains(b.Type, "PRIVATE KEY") {
				return nil, refuse("pem_invalid", "the certificate file holds a private key: pass the key with --private-key and only certificates with --certificate")
			}
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, refuse("pem_invalid", "certificate %d in the file does not parse: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, refuse("pem_invalid", "no PEM certificate found: the file must hold -----BEGIN CERTIFICATE----- blocks, the server's certificate first")
	}
	return certs, nil
}

func parseKey(data []byte, passphrase string) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, refuse("pem_invalid", "no PEM private key found: the file must hold a -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY) block")
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		der := b.Bytes
		//lint:ignore SA1019 legacy encrypted PEM is what openssl -des3 writes; it is the user's file, not our choice
		if x509.IsEncryptedPEMBlock(b) { //nolint:staticcheck
			if passphrase == "" {
				return nil, refuse("passphrase_required", "the private key is encrypted: pass its --passphrase")
			}
			var err error
			//lint:ignore SA1019 see above
			if der, err = x509.DecryptPEMBlock(b, []byte(passphrase)); err != nil { //nolint:staticcheck
				return nil, refuse("passphrase_wrong", "the private key could not be decrypted: check the --passphrase")
			}
		}
		var k any
		var err error
		switch b.Type {
		case "ENCRYPTED PRIVATE KEY":
			if passphrase == "" {
				return nil, refuse("passphrase_required", "the private key is encrypted: pass its --passphrase")
			}
			if k, err = pkcs8.ParsePKCS8PrivateKey(der, []byte(passphrase)); err != nil {
				return nil, refuse("passphrase_wrong", "the private key could not be decrypted: check the --passphrase")
			}
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(der)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(der)
		default:
			k, err = x509.ParsePKCS8PrivateKey(der)
		}
		if err != nil {
			return nil, refuse("pem_invalid", "the private key does not parse: %v", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, refuse("key_unsupported", "the private key type is not supported: use RSA, ECDSA or Ed25519")
		}
		return s, nil
	}
}

func samePublicKey(pub any, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		e, ok := pub.(equaler)
		return ok && e.Equal(key.Public())
	}
	return false
}
