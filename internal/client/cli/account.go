package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/client/config"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// spinner shows progress on a terminal; it returns the function that ends it.
func (c *cli) spinner(msg string) func() {
	if !c.stderrTerminal() {
		return func() {}
	}
	bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(c.o.Stderr), progressbar.OptionSetDescription(msg),
		progressbar.OptionSpinnerType(14), progressbar.OptionClearOnFinish(), progressbar.OptionShowElapsedTimeOnFinish())
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				bar.Add(1)
			}
		}
	}()
	return func() {
		close(done)
		bar.Finish()
		fmt.Fprint(c.o.Stderr, "\r\033[K")
	}
}

func (c *cli) loginCmd() *cobra.Command {
	var server, token, caFile, caSHA string
	cmd := &cobra.Command{
		Use:     "login --server URL --token TOKEN [--ca FILE]",
		Short:   "Point the CLI at a Gantry server",
		Example: "  gantry login --server http://paas.example.com --token gnt_...",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == "" || token == "" {
				return fmt.Errorf("pass both --server and --token (an admin creates your token with `gantry user create`)")
			}
			if !strings.Contains(server, "://") {
				server = "https://" + server
			}
			cl := client.New(server, token)
			cl.Insecure = c.insecure
			var ca string
			if caSHA != "" && caFile == "" {
				// Fetch the platform root (public) and keep it only if it is
				// the one the operator named by its fingerprint.
				pem, err := fetchCA(cmd.Context(), server, caSHA)
				if err != nil {
					return err
				}
				ca = pem
				cl.TrustPEM(ca)
			}
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				if ca = string(b); cl.TrustPEM(ca) != nil {
					return fmt.Errorf("%s holds no PEM certificate: save the output of `gantry ca show` (or GET /v1/ca) and give that", caFile)
				}
			}
			info, err := cl.Info(cmd.Context())
			if err != nil {
				return err
			}
			path, err := c.configPath()
			if err != nil {
				return err
			}
			if err := config.Save(path, &config.Config{Server: strings.TrimRight(server, "/"), Token: token, User: info.User.Name, Insecure: c.insecure, CA: ca}); err != nil {
				return err
			}
			return c.out(map[string]any{"server": server, "user": info.User.Name, "config": path}, func(w io.Writer) {
				fmt.Fprintf(w, "Logged in to %s as %s (saved in %s).\n", server, info.User.Name, path)
			})
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "server URL")
	cmd.Flags().StringVar(&token, "token", "", "API token")
	cmd.Flags().StringVar(&caFile, "ca", "", "PEM file of the platform root certificate (`gantry ca show` on the server) to trust for an https:// server")
	cmd.Flags().StringVar(&caSHA, "ca-sha256", "", "fetch the platform root certificate from the server and trust it if its SHA-256 is this (`gantry ca show` prints it)")
	return cmd
}

func (c *cli) sshkeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sshkey", Short: "Manage the SSH keys you git push with"}
	var name string
	add := &cobra.Command{
		Use:   "add [FILE]",
		Short: "Add a public key (default ~/.ssh/id_ed25519.pub) and trust the server's host key",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			path := ""
			if len(args) == 1 {
				path = args[0]
			} else {
				home, _ := os.UserHomeDir()
				for _, f := range []string{"id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"} {
					if _, err := os.Stat(filepath.Join(home, ".ssh", f)); err == nil {
						path = filepath.Join(home, ".ssh", f)
						break
					}
				}
				if path == "" {
					return fmt.Errorf("no public key found in ~/.ssh: create one with `ssh-keygen -t ed25519`, or pass the file")
				}
			}
			if !strings.HasSuffix(path, ".pub") {
				if _, err := os.Stat(path + ".pub"); err == nil {
					return fmt.Errorf("%s looks like a private key: pass %s.pub", path, path)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("reading the key: %w", err)
			}
			key, err := cl.AddSSHKey(cmd.Context(), name, string(data))
			if err != nil {
				return err
			}
			added, khPath, kerr := c.trustHostKeys(cmd.Context(), cl)
			return c.out(map[string]any{"key": key, "known_hosts_added": added}, func(w io.Writer) {
				fmt.Fprintf(w, "Added SSH key %q (%s).\n", key.Name, key.Fingerprint)
				if kerr != nil {
					fmt.Fprintf(w, "Could not record the server's host key in %s: %v\n", khPath, kerr)
				}
				for _, h := range added {
					fmt.Fprintf(w, "Trusted the server's SSH host key for %s in %s.\n", h, khPath)
				}
			})
		},
	}
	add.Flags().StringVar(&name, "name", "", "a name for the key (default: its comment)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List your keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			keys, err := cl.SSHKeys(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(keys, func(w io.Writer) {
				if len(keys) == 0 {
					fmt.Fprintln(w, "No keys yet: add one with `gantry sshkey add ~/.ssh/id_ed25519.pub`.")
					return
				}
				var rows [][]string
				for _, k := range keys {
					rows = append(rows, []string{k.Name, k.Type, k.Fingerprint, k.Created.Local().Format(time.DateTime)})
				}
				table(w, []string{"NAME", "TYPE", "FINGERPRINT", "ADDED"}, rows)
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a key by name or fingerprint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.RemoveSSHKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			return c.out(map[string]any{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Removed key %q.\n", args[0]) })
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

// trustHostKeys adds the server's SSH host keys to ~/.ssh/known_hosts,
// learnt over the authenticated API, so that the first git clone does not
// ask the user to trust an unknown host.
func (c *cli) trustHostKeys(ctx context.Context, cl *client.Client) ([]string, string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(home, ".ssh", "known_hosts")
	info, err := cl.Info(ctx)
	if err != nil {
		return nil, path, err
	}
	existing, _ := os.ReadFile(path)
	have := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(existing)))
	for sc.Scan() {
		have[strings.TrimSpace(sc.Text())] = true
	}
	var add []string
	var hosts []string
	for _, line := range info.SSHHostKeys {
		if !have[line] {
			add = append(add, line)
			hosts = append(hosts, strings.Fields(line)[0])
		}
	}
	if len(add) == 0 {
		return nil, path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, path, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, path, err
	}
	defer f.Close()
	prefix := ""
	if len(existing) > 0 && !strings.HasSuffix(string(existing), "\n") {
		prefix = "\n"
	}
	_, err = fmt.Fprint(f, prefix+strings.Join(add, "\n")+"\n")
	return hosts, path, err
}

func (c *cli) domainCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "domain", Short: "Manage your domains (namespaces for apps)"}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a domain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			d, err := cl.CreateDomain(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.out(d, func(w io.Writer) {
				fmt.Fprintf(w, "Created domain %s. Create an app in it with `gantry app create NAME --type nodejs`.\n", d.Name)
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List your domains",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ds, err := cl.Domains(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(ds, func(w io.Writer) {
				if len(ds) == 0 {
					fmt.Fprintln(w, "No domains yet: create one with `gantry domain create NAME`.")
					return
				}
				var rows [][]string
				for _, d := range ds {
					rows = append(rows, []string{d.Name, fmt.Sprint(d.Apps), d.Created.Local().Format(time.DateTime)})
				}
				table(w, []string{"NAME", "APPS", "CREATED"}, rows)
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an empty domain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.DeleteDomain(cmd.Context(), args[0]); err != nil {
				return err
			}
			return c.out(map[string]any{"deleted": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Deleted domain %s.\n", args[0]) })
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func (c *cli) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users (admin)"}
	var admin bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user and print their API token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			u, err := cl.CreateUser(cmd.Context(), args[0], admin)
			if err != nil {
				return err
			}
			return c.out(u, func(w io.Writer) {
				fmt.Fprintf(w, "Created user %s. Their API token (shown only now):\n\n  %s\n\nThey log in with:\n  gantry login --server %s --token %s\n", u.Name, u.Token, cl.Server, u.Token)
			})
		},
	}
	create.Flags().BoolVar(&admin, "admin", false, "make the user an admin")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			us, err := cl.Users(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(us, func(w io.Writer) {
				var rows [][]string
				for _, u := range us {
					role := "user"
					if u.Admin {
						role = "admin"
					}
					rows = append(rows, []string{u.Name, role, u.Created.Local().Format(time.DateTime)})
				}
				table(w, []string{"NAME", "ROLE", "CREATED"}, rows)
			})
		},
	}
	var pwStdin bool
	password := &cobra.Command{
		Use:   "password [NAME]",
		Short: "Set your console password (an admin: anyone's)",
		Long:  "Asks for the password twice on a terminal; --password-stdin reads it from stdin (scripts). The console signs in with it at https://PLATFORM/console/.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			} else {
				info, err := cl.Info(cmd.Context())
				if err != nil {
					return err
				}
				name = info.User.Name
			}
			pw, err := c.readPassword(pwStdin)
			if err != nil {
				return err
			}
			if err := cl.SetPassword(cmd.Context(), name, pw); err != nil {
				return err
			}
			return c.out(map[string]string{"user": name}, func(w io.Writer) {
				fmt.Fprintf(w, "The console password of %s is set: sign in at %s/console/\n", name, cl.Server)
			})
		},
	}
	password.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from stdin")
	cmd.AddCommand(create, list, password)
	return cmd
}

// fetchCA gets the platform root from the server (it is public; nothing is
// trusted yet, so the TLS check is skipped for this one request) and
// returns it only if its SHA-256 is want.
func fetchCA(ctx context.Context, server, want string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/v1/ca", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching the platform root certificate: %w", err)
	}
	defer resp.Body.Close()
	var v apitypes.CAView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.PEM == "" {
		return "", fmt.Errorf("fetching the platform root certificate: the server sent none (%s)", resp.Status)
	}
	block, _ := pem.Decode([]byte(v.PEM))
	if block == nil {
		return "", errors.New("the platform root certificate the server sent is not PEM")
	}
	sum := sha256.Sum256(block.Bytes)
	got := hex.EncodeToString(sum[:])
	if !strings.EqualFold(strings.ReplaceAll(want, ":", ""), got) {
		return "", fmt.Errorf("the server's root certificate has SHA-256 %s, not %s: do not trust it (ask the operator for `gantry ca show`'s fingerprint)", got, want)
	}
	return v.PEM, nil
}

// readPassword reads a new password: from stdin, or twice from the
// terminal without echo.
func (c *cli) readPassword(fromStdin bool) (string, error) {
	f, ok := c.o.Stdin.(*os.File)
	if fromStdin || !ok || !term.IsTerminal(int(f.Fd())) {
		if !fromStdin {
			return "", fmt.Errorf("give the password on a terminal, or with --password-stdin")
		}
		return stdinLine(c.o.Stdin)
	}
	fmt.Fprint(c.o.Stderr, "New password: ")
	a, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(c.o.Stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(c.o.Stderr, "Again: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(c.o.Stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", fmt.Errorf("the two passwords differ: nothing was set")
	}
	return string(a), nil
}

func (c *cli) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Your API tokens and console sessions"}
	list := &cobra.Command{
		Use:   "list",
		Short: "Your API tokens and console sessions (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ts, err := cl.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(ts, func(w io.Writer) {
				var rows [][]string
				for _, t := range ts {
					kind, exp := "api", ""
					if t.Session {
						kind, exp = "session", t.Expires.Local().Format("2006-01-02 15:04")
					}
					rows = append(rows, []string{t.ID, kind, t.Name, t.Created.Local().Format("2006-01-02 15:04"), exp})
				}
				table(w, []string{"ID", "KIND", "NAME", "CREATED", "EXPIRES"}, rows)
			})
		},
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Make an API token (its secret is shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			t, err := cl.CreateToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.out(t, func(w io.Writer) {
				fmt.Fprintf(w, "Token %s (%s), shown only now:\n\n  %s\n", t.ID, t.Name, t.Token)
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke one of your tokens or sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			return c.out(map[string]string{"revoked": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Token %s revoked.\n", args[0]) })
		},
	}
	cmd.AddCommand(list, create, revoke)
	return cmd
}
