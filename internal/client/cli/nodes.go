package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func (c *cli) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "The platform's machines (admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "Machines: address, roles, state, gears, memory, overlay, version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ns, err := cl.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(ns, func(w io.Writer) {
				rows := [][]string{}
				for _, n := range ns {
					roles := strings.Join(n.Roles, ",")
					if len(n.Leads) > 0 {
						roles += " (leads " + strings.Join(n.Leads, ",") + ")"
					}
					overlay := n.Overlay
					if n.GearBlock != "" {
						overlay += " " + n.GearBlock
					}
					rows = append(rows, []string{n.Name, n.Address, roles, n.State, strconv.Itoa(n.Gears),
						gib(n.MemoryUsed) + "/" + gib(n.MemoryTotal), overlay, n.Version})
				}
				table(w, []string{"NAME", "ADDRESS", "ROLES", "STATE", "GEARS", "MEMORY", "OVERLAY", "VERSION"}, rows)
			})
		},
	})
	for _, on := range []bool{true, false} {
		use, short := "cordon NODE", "Place no new gears on a node (those it runs stay)"
		if !on {
			use, short = "uncordon NODE", "Place new gears on a node again"
		}
		cmd.AddCommand(&cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, err := c.client()
				if err != nil {
					return err
				}
				n, err := cl.Cordon(cmd.Context(), args[0], on)
				if err != nil {
					return err
				}
				return c.out(n, func(w io.Writer) { fmt.Fprintf(w, "Node %s is %s.\n", n.Name, n.State) })
			},
		})
	}
	cmd.AddCommand(&cobra.Command{
		Use: "drain NODE", Short: "Cordon a node and move its web gears to the other machines, dropping no request", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			stop := c.spinner("Moving gears off " + args[0])
			v, err := cl.Drain(cmd.Context(), args[0])
			stop()
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				total := 0
				for app, n := range v.Moved {
					fmt.Fprintf(w, "  %s: %d gear(s) moved\n", app, n)
					total += n
				}
				fmt.Fprintf(w, "Node %s is drained (%d gears moved) and cordoned.\n", v.Node, total)
				for _, s := range v.Stayed {
					fmt.Fprintf(w, "  %s stays on %s with its data.\n", s, v.Node)
				}
			})
		},
	})
	var ttl string
	token := &cobra.Command{
		Use: "token", Short: "Make a single-use token with which one machine joins the cluster", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.JoinToken(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "Join token (single use, expires %s):\n\n  %s\n\nOn the new machine:\n\n  %s\n", v.Expires.Local().Format("2006-01-02 15:04"), v.Token, v.Command)
			})
		},
	}
	token.Flags().StringVar(&ttl, "ttl", "1h", "how long the token lasts (at most 168h)")
	cmd.AddCommand(token)
	cmd.AddCommand(&cobra.Command{
		Use: "remove NODE", Short: "Forget a machine that is down (its web gears run elsewhere)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.RemoveNode(cmd.Context(), args[0]); err != nil {
				return err
			}
			return c.out(map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Node %s removed.\n", args[0]) })
		},
	})
	return cmd
}

// gib writes bytes as GiB with one decimal.
func gib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + "G" }
