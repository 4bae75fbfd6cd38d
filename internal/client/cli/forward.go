package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
	"github.com/gantry-paas/gantry/internal/wstunnel"
)

// Forward is one local listener and what it forwards to.
type Forward struct {
	Service string `json:"service"`
	Gear    string `json:"gear"`
	Local   string `json:"local"`
	Remote  string `json:"remote"`
}

func (c *cli) portForwardCmd() *cobra.Command {
	var gear, via string
	var only []string
	cmd := &cobra.Command{
		Use:   "port-forward APP [LOCALPORT:SERVICE...]",
		Short: "Forward the services of an app's gear (web, databases…) to this machine",
		Long: `Lists what listens in one of the app's gears (the web process, its databases,
anything the app opened), listens on 127.0.0.1 for each (the same port number
when free, otherwise the next free one), and forwards every connection over
Gantry's SSH endpoint until Ctrl-C. Only your own gears can be reached.`,
		Example: `  gantry port-forward blog
  gantry port-forward blog --service postgresql
  gantry port-forward blog 15432:postgresql`,
		Args: cobra.MinimumNArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			// The tunnel's packets are garbage at once and the live heap is
			// small: collect less often.
			debug.SetGCPercent(400)
			app, err := cl.App(ctx, d, a)
			if err != nil {
				return err
			}
			q := ""
			if gear != "" {
				q = "?gear=" + url.QueryEscape(gear)
			}
			svcs, err := cl.Services(ctx, d, a, q)
			if err != nil {
				return err
			}
			explicitGear := gear != ""
			if gear == "" {
				for _, s := range svcs {
					if !s.Cartridge {
						gear = s.Gear // the oldest web gear
						break
					}
				}
			}
			wantPort := map[string]int{}
			for _, arg := range args {
				port, name, ok := strings.Cut(arg, ":")
				p, err := strconv.Atoi(port)
				if !ok || err != nil || p < 1 || p > 65535 {
					return fmt.Errorf("%q is not LOCALPORT:SERVICE (e.g. 15432:postgresql)", arg)
				}
				wantPort[name] = p
				only = append(only, name)
			}
			var chosen []apitypes.ServiceView
			for _, s := range svcs {
				inScope := s.Gear == gear || (!explicitGear && s.Cartridge)
				if inScope && (len(only) == 0 || contains(only, s.Name)) {
					chosen = append(chosen, s)
				}
			}
			for _, name := range only {
				found := false
				for _, s := range chosen {
					found = found || s.Name == name
				}
				if !found {
					return fmt.Errorf("the gear has no service %q: it has %s", name, serviceNames(svcs, gear))
				}
			}
			if len(chosen) == 0 {
				return fmt.Errorf("nothing listens in the app's gears: is the app running? (`gantry app show %s`)", a)
			}
			var fw forwarder
			switch via {
			case "https":
				fw = &wsForwarder{cl: cl}
			case "ssh":
			default:
				return fmt.Errorf("--via %q: choose ssh or https", via)
			}
			u, err := url.Parse(app.GitURL)
			if err != nil {
				return err
			}
			sshAddr := net.JoinHostPort(u.Hostname(), u.Port())
			var first *ssh.Client
			if fw == nil {
				first, err = dialSSH(sshAddr, u.User.Username())
			}
			if err != nil {
				fmt.Fprintf(c.o.Stderr, "Could not open the SSH tunnel to %s: %v\nThe same with OpenSSH:\n  ssh -N -p %s", sshAddr, err, u.Port())
				for _, s := range chosen {
					fmt.Fprintf(c.o.Stderr, " -L %d:%s:%d", s.Port, s.IP, s.Port)
				}
				fmt.Fprintf(c.o.Stderr, " %s@%s\n", u.User.Username(), u.Hostname())
				return fmt.Errorf("port forwarding could not start")
			}
			if fw == nil {
				conn := &tunnel{addr: sshAddr, user: u.User.Username(), stderr: c.o.Stderr}
				conn.set(first)
				defer conn.close()
				fw = conn
			}

			var forwards []Forward
			var listeners []net.Listener
			defer func() {
				for _, l := range listeners {
					l.Close()
				}
			}()
			for _, s := range chosen {
				port := s.Port
				if p, ok := wantPort[s.Name]; ok {
					port = p
				}
				l, err := listenFrom(port, wantPort[s.Name] != 0)
				if err != nil {
					return err
				}
				listeners = append(listeners, l)
				local := l.Addr().String()
				if l.Addr().(*net.TCPAddr).Port != port {
					fmt.Fprintf(c.o.Stderr, "Port %d is in use here: %s goes to %s instead.\n", port, s.Name, local)
				}
				forwards = append(forwards, Forward{Service: s.Name, Gear: s.Gear, Local: local, Remote: net.JoinHostPort(s.IP, strconv.Itoa(s.Port))})
			}
			if err := c.out(forwards, func(w io.Writer) {
				var rows [][]string
				for _, f := range forwards {
					rows = append(rows, []string{f.Service, f.Local, f.Remote})
				}
				table(w, []string{"Service", "Local", "Remote"}, rows)
				fmt.Fprintln(w, "Forwarding until Ctrl-C.")
			}); err != nil {
				return err
			}
			if f, ok := c.o.Stdout.(interface{ Sync() error }); ok {
				f.Sync()
			}
			var wg sync.WaitGroup
			for i, l := range listeners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.serveForward(ctx, fw, l, forwards[i])
				}()
			}
			<-ctx.Done()
			cancelListeners(listeners)
			wg.Wait()
			return nil
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.Flags().StringVar(&gear, "gear", "", "which gear (default: the oldest running one)")
	cmd.Flags().StringSliceVar(&only, "service", nil, "only these services (web, postgresql, …)")
	cmd.Flags().StringVar(&via, "via", "ssh", "ssh, or https: a WebSocket tunnel through the router, for networks where only HTTPS gets out")
	return cmd
}

func cancelListeners(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// tunnel is the SSH connection of a port-forward. If the server goes away
// (a restart), the next connection reconnects, retrying while it comes back.
type tunnel struct {
	mu     sync.Mutex
	addr   string
	user   string
	stderr io.Writer
	c      *ssh.Client
}

func (t *tunnel) set(c *ssh.Client) {
	t.mu.Lock()
	t.c = c
	t.mu.Unlock()
	go t.watch(c)
}

func (t *tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c != nil {
		t.c.Close()
		t.c = nil
	}
}

// Dial opens a forwarded connection, reconnecting first if needed (for up
// to 30 s: a server restart).
func (t *tunnel) Dial(network, addr string) (net.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c == nil {
		deadline := time.Now().Add(30 * time.Second)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			c, err := dialSSH(t.addr, t.user)
			if err == nil {
				fmt.Fprintln(t.stderr, "Reconnected to the Gantry server.")
				t.c = c
				go t.watch(c)
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("cannot reach the Gantry server at %s: %w", t.addr, err)
			}
			time.Sleep(wait)
		}
	}
	return t.c.Dial(network, addr)
}

// watch forgets the connection when it ends, so the next Dial reconnects.
func (t *tunnel) watch(c *ssh.Client) {
	c.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c == c {
		t.c = nil
		fmt.Fprintln(t.stderr, "Lost the connection to the Gantry server; reconnecting on the next connection.")
	}
}

// forwarder carries one local connection to a remote service.
type forwarder interface {
	forward(ctx context.Context, local net.Conn, remote string) error
}

func (t *tunnel) forward(_ context.Context, local net.Conn, remote string) error {
	conn, err := t.Dial("tcp", remote)
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(conn, local)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // the client's half-close reaches the service
		}
		close(done)
	}()
	// The patched x/crypto/ssh (third_party/README.md) writes what has
	// arrived to the socket as it came in, a batch of packets per writev
	// and one window adjustment per batch.
	io.Copy(local, conn)
	if cw, ok := local.(*net.TCPConn); ok {
		cw.CloseWrite()
	}
	<-done
	return nil
}

// wsForwarder carries connections over WebSockets to the API's tunnel
// endpoint, authenticated with the API token.
type wsForwarder struct {
	cl *client.Client
}

func (w *wsForwarder) forward(ctx context.Context, local net.Conn, remote string) error {
	ws, resp, err := websocket.Dial(ctx, w.cl.TunnelURL(remote), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + w.cl.Token}},
		HTTPClient: w.cl.HTTP})
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return err
	}
	wstunnel.Relay(ctx, ws, local)
	return nil
}

// serveForward accepts local connections and forwards each.
func (c *cli) serveForward(ctx context.Context, fw forwarder, l net.Listener, f Forward) {
	for {
		local, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer local.Close()
			if err := fw.forward(ctx, local, f.Remote); err != nil {
				fmt.Fprintf(c.o.Stderr, "%s: %v (is the gear running? `gantry app show`)\n", f.Service, err)
			}
		}()
	}
}

// listenFrom listens on 127.0.0.1:port, or the next free port unless the
// user chose it.
func listenFrom(port int, exact bool) (net.Listener, error) {
	for p := port; p <= 65535 && p < port+100; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			return l, nil
		}
		if exact {
			return nil, fmt.Errorf("local port %d is in use: choose another", port)
		}
	}
	return nil, fmt.Errorf("no free local port from %d", port)
}

// dialSSH connects to Gantry's SSH endpoint with the user's agent or keys,
// checking the host key against ~/.ssh/known_hosts.
func dialSSH(addr, user string) (*ssh.Client, error) {
	home, _ := os.UserHomeDir()
	hostKeys, err := knownhosts.New(filepath.Join(home, ".ssh", "known_hosts"))
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts: %w (run `gantry sshkey add` to trust the server)", err)
	}
	var signers []ssh.Signer
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if ac, err := net.Dial("unix", sock); err == nil {
			if ss, err := sshagent.NewClient(ac).Signers(); err == nil {
				signers = append(signers, ss...)
			}
		}
	}
	for _, f := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		if b, err := os.ReadFile(filepath.Join(home, ".ssh", f)); err == nil {
			if s, err := ssh.ParsePrivateKey(b); err == nil {
				signers = append(signers, s)
			}
		}
	}
	if len(signers) == 0 {
		return nil, errors.New("no usable SSH key (an agent, or an unencrypted ~/.ssh/id_ed25519)")
	}
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)}, HostKeyCallback: hostKeys})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func serviceNames(svcs []apitypes.ServiceView, gear string) string {
	var names []string
	for _, s := range svcs {
		if s.Gear == gear || s.Cartridge {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return "nothing listening"
	}
	return strings.Join(names, ", ")
}
