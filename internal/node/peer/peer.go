// Package peer is what machines of a cluster ask of each other, over
// mutual TLS with certificates of the cluster sub-CA: start a gear placed
// on the machine (its output streamed back), stop one, read its state,
// and hand over a deployment's built tree to a machine that runs it but
// did not build it. The server side calls the machine's agent through
// Local; the client side is what the agent uses to reach other machines.
package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/artifact"
)

// Local is what this machine does for the others (its agent).
type Local interface {
	// StartGear starts a gear recorded on this machine and returns once it
	// serves (or failed), writing progress to out.
	StartGear(ctx context.Context, gearID string, out io.Writer) error
	// StopGear stops a gear of this machine (its record may be gone).
	StopGear(ctx context.Context, gearID string) error
	// GearState is a gear's process state.
	GearState(gearID string) (State, error)
	// DeploymentDir is where this machine keeps a deployment's tree, if
	// it has it.
	DeploymentDir(appID, depID string) (string, bool)
	// ArtifactPath is this machine's copy of a packed build, if it has it.
	ArtifactPath(digest string) (string, bool)
	// LogDir is where this machine keeps an app's gear logs.
	LogDir(appID string) string
	// GearServices lists what listens in a gear of this machine (JSON).
	GearServices(gearID string) ([]byte, error)
	// DialGear connects to target (one of the gear's services) from
	// inside the gear, refusing anything else.
	DialGear(gearID, target string) (net.Conn, error)
	// ExecGear prepares a command (a login shell when "") in a gear of
	// this machine, as the gear's user.
	ExecGear(gearID, command string, tty bool, term string) (*exec.Cmd, error)
}

// State is a gear's process as its machine sees it.
type State struct {
	PID      int    `json:"pid"`
	Status   string `json:"status"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	// What the gear uses now (namespaced gears: its cgroup).
	Memory   int64         `json:"memory,omitempty"`
	CPU      time.Duration `json:"cpu,omitempty"`
	OOMKills int           `json:"oom_kills,omitempty"`
}

// resultPrefix starts the last line of a start's stream: the outcome.
const resultPrefix = "\x00gantry-peer-result "

// Server answers the other machines.
type Server struct {
	ln    net.Listener
	srv   *http.Server
	local Local
	repos Repos
	log   *slog.Logger
}

// Repos writes the bundle of an app's git repository (nil: this machine
// keeps none).
type Repos func(ctx context.Context, appID string, w io.Writer) error

// NewServer listens on addr with tlsConf (client certificates required).
func NewServer(addr string, tlsConf *tls.Config, local Local, repos Repos, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the cluster port %s: %w", addr, err)
	}
	s := &Server{ln: tls.NewListener(ln, tlsConf), local: local, repos: repos, log: log.With("component", "peer")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /peer/v1/gears/{id}/start", s.start)
	mux.HandleFunc("POST /peer/v1/gears/{id}/stop", s.stop)
	mux.HandleFunc("GET /peer/v1/gears/{id}", s.state)
	mux.HandleFunc("GET /peer/v1/deployments/{app}/{dep}", s.deployment)
	mux.HandleFunc("GET /peer/v1/artifacts/{digest}", s.artifact)
	mux.HandleFunc("GET /peer/v1/repos/{app}", s.repo)
	mux.HandleFunc("GET /peer/v1/logs/{app}", s.logs)
	mux.HandleFunc("GET /peer/v1/gears/{id}/services", s.services)
	mux.HandleFunc("POST /peer/v1/gears/{id}/dial", s.dial)
	mux.HandleFunc("POST /peer/v1/gears/{id}/exec", s.exec)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return s, nil
}

// Addr is where it listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.srv.Shutdown(sctx)
		cancel()
	}()
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// flushWriter sends each write at once.
type flushWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.f.Flush()
	return n, err
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fw := flushWriter{w, w.(http.Flusher)}
	err := s.local.StartGear(r.Context(), r.PathValue("id"), fw)
	res := "ok"
	if err != nil {
		res = strings.ReplaceAll(err.Error(), "\n", "\x1f")
	}
	fmt.Fprintf(fw, "\n%s%s\n", resultPrefix, res)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	if err := s.local.StopGear(r.Context(), r.PathValue("id")); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	st, err := s.local.GearState(r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	json.NewEncoder(w).Encode(st)
}

// artifact sends a packed build this machine holds.
func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	p, ok := s.local.ArtifactPath(r.PathValue("digest"))
	if !ok {
		http.Error(w, "this machine does not have that build", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	http.ServeFile(w, r, p)
}

func (s *Server) deployment(w http.ResponseWriter, r *http.Request) {
	dir, ok := s.local.DeploymentDir(r.PathValue("app"), r.PathValue("dep"))
	if !ok {
		http.Error(w, "this machine does not have that deployment", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := artifact.Pack(w, dir); err != nil {
		s.log.Warn("sending a deployment", "dir", dir, "err", err)
	}
}

func (s *Server) repo(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if s.repos == nil || strings.ContainsAny(app, "/.") {
		http.Error(w, "no such repository here", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-git-bundle")
	if err := s.repos(r.Context(), app, w); err != nil {
		s.log.Warn("sending a repository", "app", app, "err", err)
	}
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	raw, err := s.local.GearServices(r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

// switchProtocols answers 101 with proto and hands over the connection.
func switchProtocols(w http.ResponseWriter, proto string) (net.Conn, *bufio.ReadWriter, error) {
	rc := http.NewResponseController(w)
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", proto)
	w.WriteHeader(http.StatusSwitchingProtocols)
	if err := rc.Flush(); err != nil {
		return nil, nil, err
	}
	return rc.Hijack()
}

// upgrade sends an upgrade request for proto to the machine at addr and
// returns the connection it hands over.
func (c *Client) upgrade(ctx context.Context, addr, path, proto string) (io.ReadWriteCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", proto)
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("the machine at %s: %s", addr, strings.TrimSpace(string(b)))
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, errors.New("the cluster port did not hand over the connection")
	}
	return rwc, nil
}

// dial connects the caller to a service of a gear: the answer is 101 and
// the connection then carries the service's bytes both ways.
func (s *Server) dial(w http.ResponseWriter, r *http.Request) {
	conn, err := s.local.DialGear(r.PathValue("id"), r.URL.Query().Get("target"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer conn.Close()
	client, brw, err := switchProtocols(w, "gantry-tcp")
	if err != nil {
		return
	}
	defer client.Close()
	done := make(chan struct{})
	go func() {
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Reader.Peek(n)
			conn.Write(b)
		}
		io.Copy(conn, client)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		close(done)
	}()
	io.Copy(client, conn)
	if cw, ok := client.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	<-done
}

// logs streams the app's gear logs of this machine as NDJSON: the last
// lines, then (follow=1) new ones until the caller goes.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if strings.ContainsAny(app, "/.") || app == "" {
		http.Error(w, "no such app", http.StatusNotFound)
		return
	}
	n, _ := strconv.Atoi(r.URL.Query().Get("lines"))
	dir := s.local.LogDir(app)
	lines, err := applog.Tail(dir, min(max(n, 0), 10000))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, l := range lines {
		enc.Encode(l)
	}
	w.(http.Flusher).Flush()
	if r.URL.Query().Get("follow") != "1" {
		return
	}
	applog.Follow(r.Context(), dir, func(l applog.Line) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		w.(http.Flusher).Flush()
		return nil
	})
}

// Client calls other machines.
type Client struct{ c *http.Client }

// NewClient calls with tlsConf (this machine's certificate; the others'
// checked against the cluster sub-CA), from the address local ("": any).
func NewClient(tlsConf *tls.Config, local string) *Client {
	d := &net.Dialer{Timeout: 3 * time.Second}
	if ip := net.ParseIP(local); ip != nil && !ip.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &Client{c: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
		DialContext: d.DialContext}}}
}

func (c *Client) do(ctx context.Context, method, addr, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	return c.c.Do(req)
}

// StartGear asks the machine at addr to start a gear placed on it,
// copying its progress to out.
func (c *Client) StartGear(ctx context.Context, addr, gearID string, out io.Writer) error {
	resp, err := c.do(ctx, http.MethodPost, addr, "/peer/v1/gears/"+gearID+"/start")
	if err != nil {
		return fmt.Errorf("reaching the machine at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the machine at %s: %s", addr, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if res, ok := strings.CutPrefix(line, resultPrefix); ok {
			if res == "ok" {
				return nil
			}
			return errors.New(strings.ReplaceAll(res, "\x1f", "\n"))
		}
		if line != "" {
			fmt.Fprintln(out, line)
		}
	}
	return fmt.Errorf("the machine at %s stopped answering while starting gear %s", addr, gearID)
}

// StopGear asks the machine at addr to stop a gear.
func (c *Client) StopGear(ctx context.Context, addr, gearID string) error {
	resp, err := c.do(ctx, http.MethodPost, addr, "/peer/v1/gears/"+gearID+"/stop")
	if err != nil {
		return fmt.Errorf("reaching the machine at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the machine at %s: %s", addr, strings.TrimSpace(string(b)))
	}
	return nil
}

// GearState reads a gear's process state on the machine at addr.
func (c *Client) GearState(ctx context.Context, addr, gearID string) (State, error) {
	var st State
	resp, err := c.do(ctx, http.MethodGet, addr, "/peer/v1/gears/"+gearID)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("the machine at %s: %s", addr, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// FetchDeployment copies a deployment's tree from the machine at addr
// into dest (which must not exist; it is removed again on failure).
func (c *Client) FetchDeployment(ctx context.Context, addr, appID, depID, dest string, chown bool) error {
	resp, err := c.do(ctx, http.MethodGet, addr, "/peer/v1/deployments/"+appID+"/"+depID)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the machine at %s: %s", addr, resp.Status)
	}
	if err := artifact.Unpack(resp.Body, dest, chown); err != nil {
		os.RemoveAll(dest)
		return err
	}
	return nil
}

// FetchArtifact copies a packed build from the machine at addr into
// cache, which keeps it only if it is the one digest names.
func (c *Client) FetchArtifact(ctx context.Context, addr, digest string, cache artifact.Cache) error {
	resp, err := c.do(ctx, http.MethodGet, addr, "/peer/v1/artifacts/"+url.PathEscape(digest))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the machine at %s: %s", addr, strings.TrimSpace(string(b)))
	}
	return cache.Fetch(digest, resp.Body)
}

// FetchRepo writes the bundle of an app's repository on the machine at
// addr to w.
func (c *Client) FetchRepo(ctx context.Context, addr, appID string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, addr, "/peer/v1/repos/"+appID)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the machine at %s: %s", addr, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Logs reads an app's gear logs on the machine at addr: its last lines,
// then with follow the new ones until ctx ends, each given to fn.
func (c *Client) Logs(ctx context.Context, addr, appID string, lines int, follow bool, fn func(applog.Line) error) error {
	path := "/peer/v1/logs/" + appID + "?lines=" + strconv.Itoa(lines)
	if follow {
		path += "&follow=1"
	}
	resp, err := c.do(ctx, http.MethodGet, addr, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the machine at %s: %s", addr, resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l applog.Line
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}

// GearServices lists what listens in a gear on the machine at addr (the
// agent's JSON).
func (c *Client) GearServices(ctx context.Context, addr, gearID string) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, addr, "/peer/v1/gears/"+gearID+"/services")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the machine at %s: %s", addr, strings.TrimSpace(string(raw)))
	}
	return raw, nil
}

// DialGear connects to a service of a gear on the machine at addr.
func (c *Client) DialGear(ctx context.Context, addr, gearID, target string) (net.Conn, error) {
	rwc, err := c.upgrade(ctx, addr, "/peer/v1/gears/"+gearID+"/dial?target="+url.QueryEscape(target), "gantry-tcp")
	if err != nil {
		return nil, err
	}
	return &upgraded{rwc: rwc}, nil
}

// upgraded is a connection handed over by an HTTP upgrade.
type upgraded struct{ rwc io.ReadWriteCloser }

func (u *upgraded) Read(p []byte) (int, error)  { return u.rwc.Read(p) }
func (u *upgraded) Write(p []byte) (int, error) { return u.rwc.Write(p) }
func (u *upgraded) Close() error                { return u.rwc.Close() }
func (u *upgraded) CloseWrite() error {
	if cw, ok := u.rwc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
func (u *upgraded) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (u *upgraded) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (u *upgraded) SetDeadline(time.Time) error      { return nil }
func (u *upgraded) SetReadDeadline(time.Time) error  { return nil }
func (u *upgraded) SetWriteDeadline(time.Time) error { return nil }
