package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/control/service"
)

// Join asks the platform at joinURL (https://HOST[:PORT]) to admit this
// machine. The server is trusted only if its certificate chains to the
// platform root the token names (its SHA-256): the joiner needs nothing
// else to know it talks to the right platform.
func Join(ctx context.Context, joinURL string, req apitypes.JoinRequest) (*apitypes.JoinGrant, error) {
	if !strings.HasPrefix(joinURL, "https://") {
		return nil, fmt.Errorf("--join %q: give the platform's HTTPS URL, https://HOST[:PORT]", joinURL)
	}
	joinURL = strings.TrimSuffix(joinURL, "/")
	_, _, rootHash, err := service.ParseJoinToken(req.Token)
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	// First the root, over TLS not yet verified: it is checked against
	// the token's hash before anything else is said.
	probe := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := probe.Get(joinURL + "/v1/ca")
	if err != nil {
		return nil, fmt.Errorf("reaching the platform at %s: %w", joinURL, err)
	}
	var ca apitypes.CAView
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ca)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s/v1/ca: %w (is it a Gantry server?)", joinURL, err)
	}
	block, _ := pem.Decode([]byte(ca.PEM))
	if block == nil {
		return nil, fmt.Errorf("%s/v1/ca holds no certificate", joinURL)
	}
	if sum := sha256.Sum256(block.Bytes); !bytes.Equal(sum[:], rootHash) {
		return nil, fmt.Errorf("the platform at %s has another root CA than the token names: wrong address, or someone in between; nothing was sent", joinURL)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, VerifyPeerCertificate: verify}}} // the chain is checked by verify, against the pinned root
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, joinURL+"/v1/cluster/join", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err = c.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("joining through %s: %w", joinURL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		var p apitypes.Problem
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			return nil, fmt.Errorf("the platform refused the join: %s", p.Detail)
		}
		return nil, fmt.Errorf("the platform refused the join: %s", resp.Status)
	}
	var g apitypes.JoinGrant
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, fmt.Errorf("the platform's answer to the join: %w", err)
	}
	return &g, nil
}

// WriteGrant writes the files of a grant under the data directory (keys
// 0600), refusing paths that leave it.
func WriteGrant(dataDir string, g *apitypes.JoinGrant) error {
	for name, raw := range g.Files {
		clean := filepath.Clean(name)
		if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("the grant names a file outside the data directory: %q", name)
		}
		p := filepath.Join(dataDir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			mode = 0o600
		}
		if err := os.WriteFile(p, raw, mode); err != nil {
			return err
		}
	}
	return nil
}
