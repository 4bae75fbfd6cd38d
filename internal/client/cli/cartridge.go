package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *cli) cartridgeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cartridge", Short: "Add databases (postgresql, redis) beside an app"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	add := &cobra.Command{
		Use:     "add APP postgresql|redis",
		Short:   "Run a database beside the app; the app restarts with DATABASE_URL or REDIS_URL",
		Example: "  gantry cartridge add blog postgresql",
		Args:    cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			var v apitypes.CartridgeView
			stop := c.spinner("Adding " + args[0] + " to " + a)
			v, err := cl.AddCartridge(ctx, d, a, args[0])
			stop()
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "Added %s to %s.\n\n", v.Name, a)
				printCartridge(w, v)
			})
		}),
	}
	list := &cobra.Command{
		Use:   "list APP",
		Short: "An app's cartridges with their connection details",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			vs, err := cl.Cartridges(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(vs, func(w io.Writer) {
				if len(vs) == 0 {
					fmt.Fprintf(w, "%s has no cartridges: add one with `gantry cartridge add %s postgresql`.\n", a, a)
				}
				for _, v := range vs {
					printCartridge(w, v)
				}
			})
		}),
	}
	var yes bool
	remove := &cobra.Command{
		Use:   "remove APP NAME",
		Short: "Remove a cartridge: its data is deleted",
		Args:  cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			if !yes {
				if !c.isTerminal() {
					return fmt.Errorf("removing %s deletes its data: pass --yes to confirm", args[0])
				}
				fmt.Fprintf(c.o.Stderr, "Removing %s from %s deletes all its data. Type %s to confirm: ", args[0], a, args[0])
				line, _ := bufio.NewReader(c.o.Stdin).ReadString('\n')
				if strings.TrimSpace(line) != args[0] {
					return fmt.Errorf("not removed")
				}
			}
			if err := cl.RemoveCartridge(ctx, d, a, args[0]); err != nil {
				return err
			}
			return c.out(map[string]any{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Removed %s and its data from %s.\n", args[0], a) })
		}),
	}
	remove.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	cmd.AddCommand(add, list, remove)
	return cmd
}

// printCartridge prints a cartridge as rhc app show did.
func printCartridge(w io.Writer, v apitypes.CartridgeView) {
	fmt.Fprintf(w, "%s\n", v.Name)
	rows := [][]string{{"  Connection URL:", v.URL}}
	if v.Database != "" {
		rows = append(rows, []string{"  Database Name:", v.Database})
	}
	if v.Username != "" {
		rows = append(rows, []string{"  Username:", v.Username})
	}
	rows = append(rows, []string{"  Password:", v.Password}, []string{"  Host:", v.Host + ":" + strconv.Itoa(v.Port)})
	if !v.Running {
		rows = append(rows, []string{"  State:", "not running"})
	}
	table(w, nil, rows)
	fmt.Fprintln(w)
}
