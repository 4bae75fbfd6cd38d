// Package console is the web console: server-rendered pages (html/template)
// with a little JavaScript (htmx for fragments, uPlot for the live charts,
// xterm.js for the terminal), every asset embedded. Like the CLI, it uses
// the REST API and nothing else, called in the same process with the
// signed-in user's session token: what the console shows and does is what
// that user may see and do through the API.
//
// Sign-in gives a session token (POST /v1/sessions), kept in an HttpOnly,
// SameSite=Strict cookie (Secure over HTTPS, where the console is meant
// to be used; plain HTTP only from this machine). Every change is a POST
// that carries a CSRF token derived from the session token, and comes
// from the console's own origin.
package console

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gantry-paas/gantry/internal/client"
)

//go:embed assets templates
var files embed.FS

// Options configure the console.
type Options struct {
	// API is the REST API's handler; the console calls it in process.
	API http.Handler
	Log *slog.Logger
	// Version is shown in the footer.
	Version string
}

// Console serves /console/.
type Console struct {
	o Options
	// who remembers whose a session token is for a few seconds: the
	// pages' live updates would ask the API each time. (Each API call
	// still checks the token: a revoked session sees nothing.)
	whoMu sync.Mutex
	who   map[string]known
	mux   *http.ServeMux
	pages map[string]*template.Template
	// assets are the embedded files with their gzip form.
	assets map[string]asset
}

type known struct {
	user  string
	admin bool
	until time.Time
}

const whoFor = 5 * time.Second

type asset struct {
	raw, gz []byte
	ctype   string
	etag    string
}

const cookieSecure, cookiePlain = "__Host-gantry-console", "gantry-console"

// New prepares the console.
func New(o Options) (*Console, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	c := &Console{o: o, mux: http.NewServeMux(), pages: map[string]*template.Template{}, assets: map[string]asset{}, who: map[string]known{}}
	if err := c.loadAssets(); err != nil {
		return nil, err
	}
	if err := c.loadTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) loadAssets() error {
	return fs.WalkDir(files, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(raw)
		zw.Close()
		sum := sha256.Sum256(raw)
		name := strings.TrimPrefix(p, "assets/")
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "text/plain; charset=utf-8"
		}
		c.assets[name] = asset{raw: raw, gz: gz.Bytes(), ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
}

// ServeHTTP serves the console's pages and assets.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := c.assets[r.PathValue("file")]
	if !ok {
		a, ok = c.assets["vendor/"+r.PathValue("file")]
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("Vary", "Accept-Encoding")
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.raw
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	w.Write(body)
}

// session is a signed-in request: the user's API client and CSRF token.
type session struct {
	Token string
	API   *client.Client
	CSRF  string
	User  string
	Admin bool
}

// secure says whether the request came over HTTPS.
func secure(r *http.Request) bool { return r.TLS != nil }

// local says whether a plain-HTTP request comes from this machine (the
// only place the console works without HTTPS).
func local(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func cookieName(r *http.Request) string {
	if secure(r) {
		return cookieSecure
	}
	return cookiePlain
}

// csrfFor derives a session's CSRF token: a page of the console holds it,
// another site cannot (it cannot read the HttpOnly cookie it comes from).
func csrfFor(token string) string {
	sum := sha256.Sum256([]byte("gantry console csrf\x00" + token))
	return hex.EncodeToString(sum[:16])
}

func (c *Console) apiClient(ctx context.Context, token string) *client.Client {
	cl := client.New("http://127.0.0.1", token)
	cl.HTTP = &http.Client{Transport: handlerTransport{c.o.API}}
	return cl
}

// signedIn returns the request's session, or nil (the cookie is missing,
// or its session ended).
func (c *Console) signedIn(r *http.Request) *session {
	ck, err := r.Cookie(cookieName(r))
	if err != nil || ck.Value == "" {
		return nil
	}
	cl := c.apiClient(r.Context(), ck.Value)
	now := time.Now()
	c.whoMu.Lock()
	k, ok := c.who[ck.Value]
	c.whoMu.Unlock()
	if !ok || now.After(k.until) {
		info, err := cl.Info(r.Context())
		if err != nil {
			c.forget(ck.Value)
			return nil
		}
		k = known{user: info.User.Name, admin: info.User.Admin, until: now.Add(whoFor)}
		c.whoMu.Lock()
		if len(c.who) > 10000 { // ended sessions' entries
			for t, e := range c.who {
				if now.After(e.until) {
					delete(c.who, t)
				}
			}
		}
		c.who[ck.Value] = k
		c.whoMu.Unlock()
	}
	return &session{Token: ck.Value, API: cl, CSRF: csrfFor(ck.Value), User: k.user, Admin: k.admin}
}

// checkChange refuses a change without the session's CSRF token or from
// another origin.
func checkChange(r *http.Request, s *session) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return errors.New("this change comes from another site")
		}
	}
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
		return errors.New("this form is out of date or not the console's (missing CSRF token): reload the page and try again")
	}
	return nil
}

// authed wraps a handler that needs a session (and, for POSTs, a valid
// CSRF token).
func (c *Console) authed(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.signedIn(r)
		if s == nil {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, ".json") && !strings.HasSuffix(r.URL.Path, "/stream") {
				http.Redirect(w, r, "/console/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "signed out: sign in again", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet {
			if err := checkChange(r, s); err != nil {
				c.o.Log.Warn("console change refused", "user", s.User, "path", r.URL.Path, "err", err)
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		fn(w, r, s)
	}
}

func (c *Console) forget(token string) {
	c.whoMu.Lock()
	delete(c.who, token)
	c.whoMu.Unlock()
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, token string, expires time.Time) {
	ck := &http.Cookie{Name: cookieName(r), Value: token, Path: "/", HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode}
	if token == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	http.SetCookie(w, ck)
}
