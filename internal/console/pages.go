package console

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /console/assets/{file...}", c.serveAsset)
	m.HandleFunc("GET /console/signin", c.signinPage)
	m.HandleFunc("POST /console/signin", c.signin)
	m.HandleFunc("POST /console/signout", c.authed(c.signout))
	m.HandleFunc("POST /console/signout-everywhere", c.authed(c.signoutEverywhere))
	m.HandleFunc("GET /console/{$}", c.authed(c.appsPage))
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
	})
	m.HandleFunc("GET /console/live.json", c.authed(c.appsLive))
	m.HandleFunc("POST /console/apps", c.authed(c.createApp))
	m.HandleFunc("GET /console/apps/{domain}/{app}", c.authed(c.appPage))
	m.HandleFunc("GET /console/apps/{domain}/{app}/live.json", c.authed(c.appLive))
	m.HandleFunc("GET /console/apps/{domain}/{app}/gears", c.authed(c.gearsFragment))
	m.HandleFunc("GET /console/apps/{domain}/{app}/stats.json", c.authed(c.appStats))
	m.HandleFunc("POST /console/apps/{domain}/{app}/scale", c.authed(c.scale))
	m.HandleFunc("POST /console/apps/{domain}/{app}/idle", c.authed(c.idle))
	m.HandleFunc("POST /console/apps/{domain}/{app}/rollback", c.authed(c.rollback))
	m.HandleFunc("POST /console/apps/{domain}/{app}/action", c.authed(c.action))
	m.HandleFunc("POST /console/apps/{domain}/{app}/env", c.authed(c.setEnv))
	m.HandleFunc("GET /console/apps/{domain}/{app}/env/{key}", c.authed(c.revealEnv))
	m.HandleFunc("GET /console/apps/{domain}/{app}/cartridges/{name}/password", c.authed(c.revealPassword))
	m.HandleFunc("POST /console/apps/{domain}/{app}/aliases", c.authed(c.aliases))
	m.HandleFunc("GET /console/apps/{domain}/{app}/logs", c.authed(c.logsPage))
	m.HandleFunc("GET /console/apps/{domain}/{app}/logs/stream", c.authed(c.logsStream))
	m.HandleFunc("GET /console/apps/{domain}/{app}/terminal", c.authed(c.terminalPage))
	m.HandleFunc("GET /console/apps/{domain}/{app}/terminal/ws", c.authed(c.terminal))
	m.HandleFunc("GET /console/tokens", c.authed(c.tokensPage))
	m.HandleFunc("POST /console/tokens", c.authed(c.createToken))
	m.HandleFunc("POST /console/tokens/{id}/revoke", c.authed(c.revokeToken))
	m.HandleFunc("GET /console/admin", c.authed(c.adminPage))
}

// page is what every template gets.
type page struct {
	Title   string
	S       *session
	OK, Err string
	Version string
	Data    any
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		d := time.Since(t)
		switch {
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return t.Local().Format("2006-01-02")
	},
	"when":  func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"short": func(s string) string { return s[:min(8, len(s))] },
	"appPath": func(a apitypes.AppView) string {
		return "/console/apps/" + url.PathEscape(a.Domain) + "/" + url.PathEscape(a.Name)
	},
	"mib":      func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) },
	"webGears": func(a apitypes.AppView) int { return live(a).Gears },
}

func (c *Console) loadTemplates() error {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/fragments.html")
	if err != nil {
		return err
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasSuffix(n, "/layout.html") || strings.HasSuffix(n, "/fragments.html") {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return err
		}
		c.pages[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] = t
	}
	return nil
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, p page) {
	p.Version = c.o.Version
	if p.OK == "" {
		p.OK = r.URL.Query().Get("ok")
	}
	if p.Err == "" {
		p.Err = r.URL.Query().Get("err")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	tmpl := "layout.html"
	if strings.HasPrefix(name, "_") { // a fragment, without the layout
		tmpl = name
	}
	t := c.pages[name]
	if t == nil { // a fragment: every page's set has them
		t = c.pages["signin"]
	}
	if err := t.ExecuteTemplate(w, tmpl, p); err != nil {
		c.o.Log.Error("console page", "page", name, "err", err)
	}
}

// back redirects to the page a form came from with a message.
func back(w http.ResponseWriter, r *http.Request, to string, err error, ok string) {
	q := "ok=" + url.QueryEscape(ok)
	if err != nil {
		q = "err=" + url.QueryEscape(problem(err))
	}
	http.Redirect(w, r, to+"?"+q, http.StatusSeeOther)
}

// problem is an API error as the console shows it.
func problem(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Detail
	}
	return err.Error()
}

func appURL(r *http.Request) string {
	return "/console/apps/" + url.PathEscape(r.PathValue("domain")) + "/" + url.PathEscape(r.PathValue("app"))
}

// Sign-in and out.

type signinData struct{ User, Next string }

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Sign in", Data: signinData{Next: r.URL.Query().Get("next")}}
	if !secure(r) && !local(r) {
		p.Err = "The console works over HTTPS: open https://" + r.Host + "/console/"
	}
	c.render(w, r, "signin", p)
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if !secure(r) && !local(r) {
		http.Error(w, "sign in over HTTPS", http.StatusForbidden)
		return
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			http.Error(w, "this sign-in comes from another site", http.StatusForbidden)
			return
		}
	}
	user, pw := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password")
	cl := c.apiClient(r.Context(), "")
	// The API counts failures by the client's address.
	cl.HTTP.Transport = addrTransport{handlerTransport{c.o.API}, r.RemoteAddr}
	sess, err := cl.SignIn(r.Context(), user, pw)
	if err != nil {
		c.render(w, r, "signin", page{Title: "Sign in", Err: problem(err), Data: signinData{User: user, Next: r.PostFormValue("next")}})
		return
	}
	c.setCookie(w, r, sess.Token, sess.Expires)
	next := r.PostFormValue("next")
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") {
		next = "/console/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// addrTransport passes the browser's address to the API (sign-in
// failures are limited per address).
type addrTransport struct {
	next handlerTransport
	addr string
}

func (t addrTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.RemoteAddr = t.addr
	return t.next.RoundTrip(req)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	s.API.SignOut(r.Context())
	c.forget(s.Token)
	c.setCookie(w, r, "", time.Time{})
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}

func (c *Console) signoutEverywhere(w http.ResponseWriter, r *http.Request, s *session) {
	s.API.SignOutEverywhere(r.Context())
	c.forget(s.Token)
	c.setCookie(w, r, "", time.Time{})
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}

// Apps.

type appsData struct {
	Apps    []apitypes.AppView
	Domains []apitypes.DomainView
	Last    map[string]time.Time // app path: its active deployment's time
}

func (c *Console) appsPage(w http.ResponseWriter, r *http.Request, s *session) {
	apps, err := s.API.Apps(r.Context(), "")
	if err != nil {
		c.render(w, r, "apps", page{Title: "Apps", S: s, Err: problem(err)})
		return
	}
	ds, _ := s.API.Domains(r.Context())
	sort.Slice(apps, func(i, j int) bool { return apps[i].Domain+"/"+apps[i].Name < apps[j].Domain+"/"+apps[j].Name })
	c.render(w, r, "apps", page{Title: "Apps", S: s, Data: appsData{Apps: apps, Domains: ds}})
}

// liveApp is what the pages' scripts update every few seconds.
type liveApp struct {
	App         string `json:"app"`
	State       string `json:"state"`
	Gears       int    `json:"gears"`
	Connections int    `json:"connections"`
	Idle        bool   `json:"idle"`
}

func live(a apitypes.AppView) liveApp {
	n := 0
	for _, g := range a.Gears {
		if g.Type == "web" && g.State == "running" {
			n++
		}
	}
	return liveApp{App: a.Domain + "/" + a.Name, State: a.State, Gears: n, Connections: a.Connections, Idle: a.Idle}
}

func (c *Console) appsLive(w http.ResponseWriter, r *http.Request, s *session) {
	apps, err := s.API.Apps(r.Context(), "")
	if err != nil {
		http.Error(w, problem(err), http.StatusBadGateway)
		return
	}
	out := []liveApp{}
	for _, a := range apps {
		out = append(out, live(a))
	}
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func (c *Console) createApp(w http.ResponseWriter, r *http.Request, s *session) {
	req := apitypes.CreateAppRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Type: r.PostFormValue("type"),
		Size: r.PostFormValue("size"), Scalable: r.PostFormValue("scalable") == "on"}
	a, err := s.API.CreateApp(r.Context(), r.PostFormValue("domain"), req)
	if err != nil {
		back(w, r, "/console/", err, "")
		return
	}
	back(w, r, "/console/apps/"+url.PathEscape(a.Domain)+"/"+url.PathEscape(a.Name), nil, "App "+a.Name+" created")
}

type appData struct {
	App         apitypes.AppView
	Deployments []apitypes.DeploymentView
	Env         []string // names only: values are shown when asked
	Events      []apitypes.EventView
	Egress      apitypes.EgressView
	Forward     string // the port-forward command
	Auto        bool
}

func (c *Console) appPage(w http.ResponseWriter, r *http.Request, s *session) {
	d, name := r.PathValue("domain"), r.PathValue("app")
	ctx := r.Context()
	a, err := s.API.App(ctx, d, name)
	if err != nil {
		c.render(w, r, "app", page{Title: name, S: s, Err: problem(err)})
		return
	}
	data := appData{App: a, Auto: a.MinGears != a.MaxGears, Forward: "gantry port-forward " + a.Name}
	if len(a.Cartridges) > 0 {
		data.Forward += " " + a.Cartridges[0].Name
	}
	data.Deployments, _ = s.API.Deployments(ctx, d, name)
	sort.Slice(data.Deployments, func(i, j int) bool { return data.Deployments[i].Created.After(data.Deployments[j].Created) })
	if env, err := s.API.Env(ctx, d, name); err == nil {
		for k := range env {
			data.Env = append(data.Env, k)
		}
		sort.Strings(data.Env)
	}
	data.Events, _ = s.API.Events(ctx, d, name)
	sort.Slice(data.Events, func(i, j int) bool { return data.Events[i].Time.After(data.Events[j].Time) })
	if len(data.Events) > 50 {
		data.Events = data.Events[:50]
	}
	data.Egress, _ = s.API.Egress(ctx, d, name)
	c.render(w, r, "app", page{Title: a.Name, S: s, Data: data})
}

func (c *Console) appLive(w http.ResponseWriter, r *http.Request, s *session) {
	a, err := s.API.App(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		http.Error(w, problem(err), http.StatusNotFound)
		return
	}
	writeJSON(w, live(a))
}

func (c *Console) appStats(w http.ResponseWriter, r *http.Request, s *session) {
	st, err := s.API.Stats(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		http.Error(w, problem(err), http.StatusNotFound)
		return
	}
	writeJSON(w, st)
}

func (c *Console) gearsFragment(w http.ResponseWriter, r *http.Request, s *session) {
	a, err := s.API.App(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		http.Error(w, problem(err), http.StatusNotFound)
		return
	}
	c.render(w, r, "_gears", page{S: s, Data: appData{App: a}})
}

func intField(r *http.Request, name string) (*int, error) {
	v := strings.TrimSpace(r.PostFormValue(name))
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a number", name, v)
	}
	return &n, nil
}

func (c *Console) scale(w http.ResponseWriter, r *http.Request, s *session) {
	var req apitypes.ScaleRequest
	var err error
	if r.PostFormValue("mode") == "auto" {
		if req.Min, err = intField(r, "min"); err == nil {
			if req.Max, err = intField(r, "max"); err == nil {
				req.Target, err = intField(r, "target")
			}
		}
	} else {
		req.Gears, err = intField(r, "gears")
		if err == nil && req.Gears == nil {
			err = errors.New("say how many gears")
		}
	}
	if err == nil {
		_, err = s.API.Scale(r.Context(), r.PathValue("domain"), r.PathValue("app"), req)
	}
	back(w, r, appURL(r), err, "Scaling changed")
}

func (c *Console) idle(w http.ResponseWriter, r *http.Request, s *session) {
	req := apitypes.IdleRequest{After: strings.TrimSpace(r.PostFormValue("after")), Now: r.PostFormValue("now") != ""}
	_, err := s.API.Idle(r.Context(), r.PathValue("domain"), r.PathValue("app"), req)
	back(w, r, appURL(r), err, "Idling changed")
}

func (c *Console) rollback(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostFormValue("deployment")
	_, err := s.API.ActivateDeployment(r.Context(), r.PathValue("domain"), r.PathValue("app"), id)
	back(w, r, appURL(r), err, "Deployment "+id+" is live")
}

func (c *Console) action(w http.ResponseWriter, r *http.Request, s *session) {
	act := r.PostFormValue("action")
	var err error
	switch act {
	case "start", "stop", "restart":
		_, err = s.API.AppAction(r.Context(), r.PathValue("domain"), r.PathValue("app"), act)
	default:
		err = fmt.Errorf("unknown action %q", act)
	}
	back(w, r, appURL(r), err, "App "+act+"ed")
}

func (c *Console) setEnv(w http.ResponseWriter, r *http.Request, s *session) {
	var p apitypes.EnvPatch
	if k := strings.TrimSpace(r.PostFormValue("unset")); k != "" {
		p.Unset = []string{k}
	} else {
		k := strings.TrimSpace(r.PostFormValue("key"))
		p.Set = map[string]string{k: r.PostFormValue("value")}
	}
	_, err := s.API.PatchEnv(r.Context(), r.PathValue("domain"), r.PathValue("app"), p)
	back(w, r, appURL(r), err, "Environment changed; the app restarts without downtime")
}

// aliases adds or removes an alias, or uploads its certificate (the API
// checks it before it replaces the one served).
func (c *Console) aliases(w http.ResponseWriter, r *http.Request, s *session) {
	d, a, host := r.PathValue("domain"), r.PathValue("app"), strings.TrimSpace(r.PostFormValue("host"))
	var err error
	var ok string
	switch r.PostFormValue("do") {
	case "add":
		_, err = s.API.AddAlias(r.Context(), d, a, host)
		ok = host + " is an alias of " + a
	case "remove":
		err = s.API.RemoveAlias(r.Context(), d, a, host)
		ok = host + " removed"
	case "cert":
		_, err = s.API.UploadAliasCert(r.Context(), d, a, host, apitypes.CertUpload{Certificate: r.PostFormValue("certificate"),
			PrivateKey: r.PostFormValue("private_key"), Passphrase: r.PostFormValue("passphrase")})
		ok = "The certificate of " + host + " is served"
	default:
		err = errors.New("unknown alias action")
	}
	back(w, r, appURL(r), err, ok)
}

func (c *Console) revealEnv(w http.ResponseWriter, r *http.Request, s *session) {
	env, err := s.API.Env(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	v, ok := env[r.PathValue("key")]
	if err != nil || !ok {
		http.Error(w, "no such variable", http.StatusNotFound)
		return
	}
	revealed(w, v)
}

// revealed answers a secret shown on request: escaped, since htmx puts
// the answer into the page as HTML.
func revealed(w http.ResponseWriter, v string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("<code>" + html.EscapeString(v) + "</code>"))
}

func (c *Console) revealPassword(w http.ResponseWriter, r *http.Request, s *session) {
	a, err := s.API.App(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err == nil {
		for _, cart := range a.Cartridges {
			if cart.Name == r.PathValue("name") {
				revealed(w, cart.Password)
				return
			}
		}
	}
	http.Error(w, "no such cartridge", http.StatusNotFound)
}

// Logs: the page, and the lines as server-sent events.

func (c *Console) logsPage(w http.ResponseWriter, r *http.Request, s *session) {
	a, err := s.API.App(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		c.render(w, r, "logs", page{Title: "Logs", S: s, Err: problem(err)})
		return
	}
	c.render(w, r, "logs", page{Title: a.Name + " logs", S: s, Data: appData{App: a}})
}

func (c *Console) logsStream(w http.ResponseWriter, r *http.Request, s *session) {
	body, err := s.API.Logs(r.Context(), r.PathValue("domain"), r.PathValue("app"), 200, true)
	if err != nil {
		http.Error(w, problem(err), http.StatusNotFound)
		return
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	fl, _ := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", sc.Bytes()); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

// Terminal: xterm.js in the page, a WebSocket to the API's exec (the
// same path as `gantry ssh`): the console hands the browser's connection
// to the API with the session's token.

func (c *Console) terminalPage(w http.ResponseWriter, r *http.Request, s *session) {
	a, err := s.API.App(r.Context(), r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		c.render(w, r, "terminal", page{Title: "Terminal", S: s, Err: problem(err)})
		return
	}
	// xterm.js writes its colours into a <style> element it makes: this
	// page allows inline styles (never inline scripts).
	w.Header().Set("Content-Security-Policy", strings.Replace(w.Header().Get("Content-Security-Policy"), "style-src 'self'", "style-src 'self' 'unsafe-inline'", 1))
	c.render(w, r, "terminal", page{Title: a.Name + " terminal", S: s, Data: appData{App: a}})
}

func (c *Console) terminal(w http.ResponseWriter, r *http.Request, s *session) {
	// A WebSocket carries no CSRF token: it must come from the console's
	// own origin (the browser sets Origin; the API checks it again).
	if o := r.Header.Get("Origin"); o == "" || !sameOrigin(o, r.Host) {
		http.Error(w, "a terminal opens from the console's own page only", http.StatusForbidden)
		return
	}
	in := r.Clone(r.Context())
	in.URL.Path = "/v1/domains/" + url.PathEscape(r.PathValue("domain")) + "/apps/" + url.PathEscape(r.PathValue("app")) + "/exec"
	in.URL.RawPath = ""
	in.RequestURI = in.URL.RequestURI()
	in.Header.Del("Cookie")
	in.Header.Set("Authorization", "Bearer "+s.Token)
	c.o.API.ServeHTTP(w, in)
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host == host
}

// Tokens and admin.

type tokensData struct {
	Tokens []apitypes.TokenView
	New    *apitypes.TokenView
}

func (c *Console) tokensPage(w http.ResponseWriter, r *http.Request, s *session) {
	ts, err := s.API.Tokens(r.Context())
	p := page{Title: "Tokens", S: s, Data: tokensData{Tokens: ts}}
	if err != nil {
		p.Err = problem(err)
	}
	c.render(w, r, "tokens", p)
}

func (c *Console) createToken(w http.ResponseWriter, r *http.Request, s *session) {
	t, err := s.API.CreateToken(r.Context(), r.PostFormValue("name"))
	if err != nil {
		back(w, r, "/console/tokens", err, "")
		return
	}
	ts, _ := s.API.Tokens(r.Context())
	c.render(w, r, "tokens", page{Title: "Tokens", S: s, OK: "Token made: copy it now, it is not shown again", Data: tokensData{Tokens: ts, New: &t}})
}

func (c *Console) revokeToken(w http.ResponseWriter, r *http.Request, s *session) {
	err := s.API.RevokeToken(r.Context(), r.PathValue("id"))
	back(w, r, "/console/tokens", err, "Token revoked")
}

type adminData struct {
	Users []apitypes.UserView
	Nodes []apitypes.NodeView
	// Platform totals.
	Gears             int
	MemUsed, MemTotal int64
	Up                int
}

func (c *Console) adminPage(w http.ResponseWriter, r *http.Request, s *session) {
	if !s.Admin {
		http.Error(w, "only admins", http.StatusForbidden)
		return
	}
	var d adminData
	var err error
	if d.Users, err = s.API.Users(r.Context()); err == nil {
		d.Nodes, err = s.API.Nodes(r.Context())
	}
	for _, n := range d.Nodes {
		d.Gears += n.Gears
		d.MemUsed += n.MemoryUsed
		d.MemTotal += n.MemoryTotal
		if n.State != "down" {
			d.Up++
		}
	}
	p := page{Title: "Admin", S: s, Data: d}
	if err != nil {
		p.Err = problem(err)
	}
	c.render(w, r, "admin", p)
}
