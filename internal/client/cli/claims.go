package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// claimCmds are `gantry alias claim NAME` and `gantry alias claims`.
func (c *cli) claimCmds() []*cobra.Command {
	claim := &cobra.Command{
		Use:   "claim NAME",
		Short: "Prove you control a DNS name (a TXT record), so that its hostnames can be your aliases",
		Long: `On a platform with several users, aliases must be under a DNS name you have
claimed. The first run prints the TXT record to publish; run it again once the
record is visible. A claim covers the name and every name under it.`,
		Example: "  gantry alias claim example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.Claim(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s is yours (%s): its hostnames and those under it can be your aliases.\n", v.Name, v.Method)
			})
		},
	}
	challenge := &cobra.Command{
		Use:   "challenge NAME",
		Short: "Print the TXT record that proves a DNS name is yours",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.ClaimChallenge(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "Publish:\n\n  %s. TXT %q\n\nthen run `gantry alias claim %s`.\n", v.Record, v.Value, v.Name)
			})
		},
	}
	list := &cobra.Command{
		Use:   "claims",
		Short: "List your claimed DNS names (an admin sees all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			vs, err := cl.Claims(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(vs, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tOWNER\tBY\tSINCE")
				for _, v := range vs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Owner, v.Method, v.Verified.Format("2006-01-02"))
				}
				tw.Flush()
			})
		},
	}
	return []*cobra.Command{claim, challenge, list}
}

// grantCmd is `gantry admin alias grant USER NAME`.
func (c *cli) grantCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alias", Short: "Operator side of aliases"}
	cmd.AddCommand(&cobra.Command{
		Use:     "grant USER NAME",
		Short:   "Give a user a DNS name (and the names under it) for aliases, without a TXT record",
		Example: "  gantry admin alias grant alice example.com",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.GrantClaim(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) { fmt.Fprintf(w, "%s now belongs to %s.\n", v.Name, v.Owner) })
		},
	})
	return cmd
}
