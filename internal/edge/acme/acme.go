// Package acme gets and renews certificates from an ACME CA for aliases
// without an uploaded certificate: certmagic does the protocol, storage and
// renewals; the router answers the HTTP-01 and TLS-ALPN-01 challenges on
// its own listeners and asks Manage for the hosts it routes.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Issuer gets and renews certificates from an ACME CA for aliases that
// have no uploaded certificate (certmagic does the protocol, storage and
// renewals; the router answers its HTTP-01 and TLS-ALPN-01 challenges).
type Issuer struct {
	cfg    *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	log    *slog.Logger

	mu      sync.Mutex
	ctx     context.Context
	managed map[string]bool
	pending []string
}

// Options configure the issuer.
type Options struct {
	Directory string // the CA's directory URL
	Email     string
	Roots     *x509.CertPool // the directory's TLS roots; nil: the system's
	Storage   string         // certificates and account keys (0700)
	// Shared, when set, holds them instead (a cluster: the platform
	// store, where one machine at a time obtains or renews, and every
	// machine serves the result and answers the challenges).
	Shared certmagic.Storage
	// RenewCheck is how often certificates are checked for renewal
	// (certmagic's default, 10 minutes, when zero).
	RenewCheck time.Duration
}

// New makes an issuer; Run starts it.
func New(o Options, log *slog.Logger) (*Issuer, error) {
	a := &Issuer{log: log.With("component", "acme"), managed: map[string]bool{}}
	zl := zap.New(slogCore{log: a.log})
	var cfg *certmagic.Config
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:             zl,
		RenewCheckInterval: o.RenewCheck,
	})
	if err := os.MkdirAll(o.Storage, 0o700); err != nil {
		return nil, err
	}
	var storage certmagic.Storage = &certmagic.FileStorage{Path: o.Storage}
	if o.Shared != nil {
		storage = o.Shared
	}
	cfg = certmagic.New(a.cache, certmagic.Config{
		Storage: storage,
		Logger:  zl,
	})
	// Challenges are answered by the router on its own listeners.
	a.issuer = certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{CA: o.Directory, Email: o.Email, Agreed: true, Logger: zl, TrustedRoots: o.Roots})
	cfg.Issuers = []certmagic.Issuer{a.issuer}
	a.cfg = cfg
	return a, nil
}

// Run manages certificates until ctx ends.
func (a *Issuer) Run(ctx context.Context) error {
	a.mu.Lock()
	a.ctx = ctx
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	a.start(ctx, pending)
	<-ctx.Done()
	a.cache.Stop()
	return nil
}

// Manage obtains certificates for hosts not managed yet (renewals are
// certmagic's). It does not block.
func (a *Issuer) Manage(hosts []string) {
	a.mu.Lock()
	var fresh []string
	for _, h := range hosts {
		if !a.managed[h] {
			a.managed[h] = true
			fresh = append(fresh, h)
		}
	}
	ctx := a.ctx
	if ctx == nil {
		a.pending = append(a.pending, fresh...)
	}
	a.mu.Unlock()
	if ctx != nil {
		a.start(ctx, fresh)
	}
}

func (a *Issuer) start(ctx context.Context, hosts []string) {
	if len(hosts) == 0 {
		return
	}
	a.log.Info("obtaining certificates", "hosts", hosts)
	if err := a.cfg.ManageAsync(ctx, hosts); err != nil {
		a.log.Error("managing certificates", "hosts", hosts, "err", err)
	}
}

// GetCertificate serves a managed certificate, or the TLS-ALPN-01
// challenge certificate during validation.
func (a *Issuer) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.cfg.GetCertificate(hello)
}

// HandleHTTPChallenge answers the CA's HTTP-01 requests.
func (a *Issuer) HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	return a.issuer.HandleHTTPChallenge(w, r)
}

// slogCore sends certmagic's zap logs to slog.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (c slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.InfoLevel }
func (c slogCore) With(f []zapcore.Field) zapcore.Core {
	return slogCore{log: c.log, fields: append(append([]zapcore.Field{}, c.fields...), f...)}
}
func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field{}, c.fields...), fields...) {
		f.AddTo(enc)
	}
	args := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		args = append(args, k, v)
	}
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, e.Message, args...)
	return nil
}
func (c slogCore) Sync() error { return nil }
