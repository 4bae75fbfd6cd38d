package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// EnvSSHCommand overrides the ssh client `gantry ssh` runs (as
// GIT_SSH_COMMAND does for git).
const EnvSSHCommand = "GANTRY_SSH_COMMAND"

func (c *cli) sshCmd() *cobra.Command {
	var gear string
	cmd := &cobra.Command{
		Use:   "ssh APP [-- COMMAND...]",
		Short: "Open a shell, or run a command, inside one of an app's gears",
		Long: `Opens a shell inside one of the app's gears, as the gear's user and with its
environment, over Gantry's SSH endpoint (your SSH key must be added with
'gantry sshkey add'). With a command after --, runs it and exits with its status.`,
		Example: `  gantry ssh blog
  gantry ssh blog -- ls -la '$GANTRY_DATA_DIR'
  gantry ssh blog --gear 4b29cd25b822 -- ps aux`,
		Args: cobra.MinimumNArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			remote := "gear " + d + "/" + a
			if gear != "" {
				remote += " --gear " + gear
			}
			return c.sshSession(ctx, cl, d, a, remote, args)
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.Flags().StringVar(&gear, "gear", "", "which gear (default: the oldest running one)")
	return cmd
}

func (c *cli) runCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "run APP [-- COMMAND...]",
		Short: "Run a command in a fresh gear of the app (a one-off: migrations, consoles, scripts)",
		Long: `Starts a fresh gear with the app's deployed code, environment (its databases'
too) and isolation, runs the command in it attached to your terminal (a shell
without a command), exits with the command's status and removes the gear. It
is never routed and takes no request; the app's running gears are untouched.
Over Gantry's SSH endpoint, as 'gantry ssh'.`,
		Example: `  gantry run blog -- python manage.py migrate
  gantry run blog -- sh -c 'echo $DATABASE_URL'
  gantry run blog
  gantry run blog --detach -- ./reindex.sh`,
		Args: cobra.MinimumNArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			if !detach && !c.json {
				return c.sshSession(ctx, cl, d, a, "run "+d+"/"+a, args)
			}
			// Over the API: detached, or attached for a script (--json).
			if len(args) == 0 {
				return errors.New("give the command after --")
			}
			var stop func()
			if !detach {
				stop = c.spinner("Running in a one-off gear")
			}
			v, err := cl.Run(ctx, d, a, apitypes.RunRequest{Command: strings.Join(args, " "), Detach: detach})
			if stop != nil {
				stop()
			}
			if err != nil {
				return err
			}
			if err := c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "Running in one-off gear %s; its output goes to the app's logs (gantry logs %s). The gear goes when the command ends.\n", v.Gear, a)
			}); err != nil {
				return err
			}
			if v.ExitCode != nil && *v.ExitCode != 0 {
				return &exitError{code: *v.ExitCode}
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.Flags().BoolVar(&detach, "detach", false, "run in the background; its output goes to the app's logs")
	return cmd
}

// sshSession runs remote (`gear …` or `run …`, with the command after
// --) on the app's SSH endpoint, with a terminal when interactive, and
// passes the exit status through.
func (c *cli) sshSession(ctx context.Context, cl *client.Client, d, a, remote string, args []string) error {
	app, err := cl.App(ctx, d, a)
	if err != nil {
		return err
	}
	u, err := url.Parse(app.GitURL)
	if err != nil || u.Scheme != "ssh" {
		return fmt.Errorf("the app has no SSH address (%q)", app.GitURL)
	}
	if len(args) > 0 {
		remote += " -- " + strings.Join(args, " ")
	}
	sshCmd := strings.Fields(os.Getenv(EnvSSHCommand))
	if len(sshCmd) == 0 {
		sshCmd = []string{"ssh"}
	}
	sshArgs := append(sshCmd[1:], "-p", u.Port())
	if len(args) == 0 && c.isTerminal() {
		sshArgs = append(sshArgs, "-t")
	} else {
		sshArgs = append(sshArgs, "-T")
	}
	sshArgs = append(sshArgs, u.User.Username()+"@"+u.Hostname(), remote)
	run := exec.CommandContext(ctx, sshCmd[0], sshArgs...)
	run.Stdin, run.Stdout, run.Stderr = c.o.Stdin, c.o.Stdout, c.o.Stderr
	err = run.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}

// exitError passes a remote command's exit status through.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
