package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
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
			app, err := cl.App(ctx, d, a)
			if err != nil {
				return err
			}
			u, err := url.Parse(app.GitURL)
			if err != nil || u.Scheme != "ssh" {
				return fmt.Errorf("the app has no SSH address (%q)", app.GitURL)
			}
			remote := "gear " + d + "/" + a
			if gear != "" {
				remote += " --gear " + gear
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
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.Flags().StringVar(&gear, "gear", "", "which gear (default: the oldest running one)")
	return cmd
}

// exitError passes a remote command's exit status through.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
