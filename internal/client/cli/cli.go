// Package cli is the `gantry` command line, in the spirit of rhc and heroku:
// apps, domains, SSH keys, environment, logs, deployments, users. It talks
// to the server only through the API client (and the user's own git and
// ssh). Every command takes --json; human output is aligned tables; errors
// say what to do next.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/client/config"
)

// Options configure the command tree.
type Options struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Daemon commands (gantry server) come from the packages that own them.
	Daemon  []*cobra.Command
	Version string
}

type cli struct {
	o        Options
	json     bool
	insecure bool
	domain   string
	cfgPath  string
}

// Main runs the CLI with args and returns the exit code.
func Main(o Options, args []string) int {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	c := &cli{o: o}
	root := c.root()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code // the remote command's own status, already reported
		}
		c.fail(err)
		return 1
	}
	return 0
}

func (c *cli) fail(err error) {
	var ae *client.Error
	if c.json {
		e := map[string]any{"error": err.Error()}
		if errors.As(err, &ae) {
			e["code"], e["status"] = ae.Code, ae.Status
		}
		json.NewEncoder(c.o.Stderr).Encode(e)
		return
	}
	fmt.Fprintf(c.o.Stderr, "Error: %s\n", err)
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "gantry",
		Short: "Gantry: git push to a live URL, on your own machines",
		Long: `Gantry is a self-hosted Platform-as-a-Service.

Start the server with 'gantry server', then:
  gantry sshkey add ~/.ssh/id_ed25519.pub
  gantry domain create acme
  gantry app create blog --type nodejs
  git clone <git URL> blog && cd blog && git push`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       c.o.Version,
	}
	root.SetIn(c.o.Stdin)
	root.SetOut(c.o.Stdout)
	root.SetErr(c.o.Stderr)
	root.PersistentFlags().BoolVar(&c.json, "json", false, "print JSON for scripts")
	root.PersistentFlags().BoolVar(&c.insecure, "insecure", false, "allow sending the API token over plain HTTP to a server that is not on this machine")
	root.PersistentFlags().StringVar(&c.cfgPath, "config", "", "client configuration file (default $GANTRY_CONFIG or ~/.config/gantry/config.json)")
	root.AddGroup(&cobra.Group{ID: "apps", Title: "Apps:"}, &cobra.Group{ID: "account", Title: "Account:"}, &cobra.Group{ID: "platform", Title: "Platform:"})
	for _, cmd := range []*cobra.Command{c.appCmd(), c.envCmd(), c.logsCmd(), c.deploymentCmd(), c.sshCmd(), c.runCmd(), c.psCmd(), c.cronCmd(), c.drainCmd(), c.snapshotCmd(), c.backupCmd(), c.portForwardCmd(), c.cartridgeCmd(), c.tailCmd(), c.aliasCmd(), c.routeCmd(), c.egressCmd(), c.runtimesCmd(), c.nodeCmd()} {
		cmd.GroupID = "apps"
		root.AddCommand(cmd)
	}
	for _, cmd := range []*cobra.Command{c.loginCmd(), c.sshkeyCmd(), c.domainCmd(), c.userCmd(), c.tokenCmd(), c.caCmd(), c.adminCmd()} {
		cmd.GroupID = "account"
		root.AddCommand(cmd)
	}
	for _, cmd := range c.o.Daemon {
		cmd.GroupID = "platform"
		root.AddCommand(cmd)
	}
	return root
}

// client loads the configuration and returns an API client.
func (c *cli) client() (*client.Client, error) {
	path, err := c.configPath()
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if errors.Is(err, config.ErrNone) {
		return nil, fmt.Errorf("the CLI is not configured (%s is missing): start `gantry server` on this machine, or run `gantry login --server URL --token TOKEN`", path)
	}
	if err != nil {
		return nil, err
	}
	cl := client.New(cfg.Server, cfg.Token)
	cl.Insecure = cfg.Insecure || c.insecure
	if cfg.CA != "" {
		if err := cl.TrustPEM(cfg.CA); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return cl, nil
}

func (c *cli) configPath() (string, error) {
	if c.cfgPath != "" {
		return c.cfgPath, nil
	}
	return config.Path()
}

// out prints v as JSON with --json, else calls human.
func (c *cli) out(v any, human func(w io.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.o.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(c.o.Stdout)
	return nil
}

// table prints aligned columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(header) > 0 {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func (c *cli) isTerminal() bool {
	f, ok := c.o.Stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (c *cli) stderrTerminal() bool {
	f, ok := c.o.Stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && !c.json
}

// stdinLine reads one line (a password, a key) from r, without its line
// ending; an input without a final newline is a line too.
func stdinLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
