// Package client is the Go client of Gantry's REST API. The CLI talks to the
// server only through it (and SSH). Errors from the server come back as
// *Error with the problem's stable code.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// Client calls the API at Server with Token.
type Client struct {
	Server string
	Token  string
	HTTP   *http.Client
	// Insecure allows sending the token over plain HTTP to a server that
	// is not on this machine.
	Insecure bool
	// CAPEM is the extra root TrustPEM added ("": none), for other tools
	// the CLI runs (git).
	CAPEM string
}

// TrustPEM makes the client trust the PEM certificates in pem besides
// the system's roots.
func (c *Client) TrustPEM(pem string) error {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return errors.New("the CA file holds no PEM certificate: save the output of `gantry ca show` (or GET /v1/ca) and give that")
	}
	c.HTTP.Transport = &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: pool}}
	c.CAPEM = pem
	return nil
}

// ErrPlainHTTP is the refusal to send a token in the clear.
var ErrPlainHTTP = errors.New("refusing to send your API token over plain HTTP to a server that is not on this machine: use its https:// URL (`gantry login --server https://…`), or pass --insecure on a network you trust")

// PlainHTTP says whether a server URL would carry the token in the clear
// over a network: http:// to anything but loopback.
func PlainHTTP(server string) bool {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "http" {
		return false
	}
	h := strings.ToLower(u.Hostname())
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return false
	}
	if ip, err := netip.ParseAddr(h); err == nil && ip.Unmap().IsLoopback() {
		return false
	}
	return true
}

// New returns a client. Long operations (app create builds and deploys)
// take minutes, so there is no overall timeout; ctx bounds each call.
func New(server, token string) *Client {
	return &Client{Server: strings.TrimRight(server, "/"), Token: token, HTTP: &http.Client{}}
}

// Error is an API error.
type Error struct {
	Status int
	Code   string
	Detail string
}

func (e *Error) Error() string { return e.Detail }

// Do sends a request with in as JSON body (if non-nil) and decodes the
// response into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the server's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Stream sends a GET and returns the open response body on success.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	ctype := "application/json"
	if r, ok := in.(io.Reader); ok { // a stream (an archive), as it is
		body, ctype = r, "application/zstd"
	} else if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	if c.Token != "" && !c.Insecure && PlainHTTP(c.Server) {
		return nil, fmt.Errorf("%s: %w", c.Server, ErrPlainHTTP)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json, application/problem+json, application/x-ndjson")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Gantry server at %s: %w (is `gantry server` running? `gantry login --server URL` points the CLI elsewhere)", c.Server, unwrapURL(err))
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var p apitypes.Problem
		if json.Unmarshal(data, &p) == nil && p.Detail != "" {
			return nil, &Error{Status: resp.StatusCode, Code: p.Code, Detail: p.Detail}
		}
		return nil, &Error{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Detail: strings.TrimSpace(string(data))}
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// AppPath is the API path of an app.
func AppPath(domain, app string) string {
	return "/v1/domains/" + url.PathEscape(domain) + "/apps/" + url.PathEscape(app)
}

// Info returns the platform info and the caller.
func (c *Client) Info(ctx context.Context) (*apitypes.InfoView, error) {
	var v apitypes.InfoView
	return &v, c.Do(ctx, http.MethodGet, "/v1/info", nil, &v)
}

// Apps lists the caller's apps, optionally by name.
func (c *Client) Apps(ctx context.Context, name string) ([]apitypes.AppView, error) {
	var v []apitypes.AppView
	path := "/v1/apps"
	if name != "" {
		path += "?name=" + url.QueryEscape(name)
	}
	return v, c.Do(ctx, http.MethodGet, path, nil, &v)
}
