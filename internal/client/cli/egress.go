package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *cli) egressCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "egress", Short: "An app's outbound policy: which destinations its gears may reach",
		Long: `Rules are checked in order, the first match decides; when none matches, the
platform default does (gantry server --egress-default). A RULE is a port label
(smtp, http, postgresql, ...: see gantry egress list), a port or range with an
optional protocol (6667, 8000-8100/tcp), a CIDR with an optional port
(198.51.100.0/24, 10.1.2.3/32:5432), a hostname (api.example.com), a wildcard
(*.example.com: names under it that the app itself looks up) or all.
The platform's own services (the router, the app's databases, DNS) are always
reachable. Refused connections fail at once with "connection refused".`}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	var after int
	add := func(action string) *cobra.Command {
		sub := &cobra.Command{
			Use:     action + " APP RULE...",
			Short:   "Add rules that " + action + " destinations (before the existing ones unless --after N)",
			Example: "  gantry egress " + action + " blog smtp 198.51.100.0/24:6667\n  gantry egress " + action + " blog all --after 2",
			Args:    cobra.MinimumNArgs(2),
			RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rules []string) error {
				v, err := cl.AddEgressRules(ctx, d, a, apitypes.EgressRulesRequest{Action: action, Rules: rules, After: after})
				if err != nil {
					return err
				}
				return c.out(v, func(w io.Writer) { printEgress(w, a, &v) })
			}),
		}
		sub.Flags().IntVar(&after, "after", 0, "insert after rule N")
		return sub
	}
	list := &cobra.Command{
		Use:   "list APP",
		Short: "Show the app's rules in order, which ones never apply, and the port labels",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			v, err := cl.Egress(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				printEgress(w, a, &v)
				fmt.Fprintln(w, "\nPort labels:")
				var names []string
				for n := range v.Labels {
					names = append(names, n)
				}
				sort.Strings(names)
				var rows [][]string
				for _, n := range names {
					rows = append(rows, []string{"  " + n, v.Labels[n]})
				}
				table(w, nil, rows)
			})
		}),
	}
	remove := &cobra.Command{
		Use:   "remove APP N",
		Short: "Remove rule N",
		Args:  cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return fmt.Errorf("%q is not a rule number: see gantry egress list %s", args[0], a)
			}
			v, err := cl.RemoveEgressRule(ctx, d, a, n)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) { printEgress(w, a, &v) })
		}),
	}
	var udp bool
	test := &cobra.Command{
		Use:     "test APP HOST:PORT",
		Short:   "Say whether the policy allows a destination, and which rule decides",
		Example: "  gantry egress test blog smtp.example.com:587",
		Args:    cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			proto := "tcp"
			if udp {
				proto = "udp"
			}
			v, err := cl.TestEgress(ctx, d, a, args[0], proto)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				verdict := "allowed"
				if !v.Allowed {
					verdict = "refused"
				}
				fmt.Fprintf(w, "%s is %s (%s).\n", v.Destination, verdict, v.Reason)
			})
		}),
	}
	test.Flags().BoolVar(&udp, "udp", false, "test UDP instead of TCP")
	cmd.AddCommand(add("allow"), add("deny"), list, remove, test)
	cmd.AddCommand(c.egressRouterCmds()...)
	return cmd
}

func (c *cli) adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Operator commands (admin token)"}
	eg := &cobra.Command{Use: "egress", Short: "Operator side of outbound policies"}
	clear := &cobra.Command{
		Use:     "clear DOMAIN/APP",
		Short:   "Let an app flagged for a port scan reach the outside again",
		Example: "  gantry admin egress clear acme/blog",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, a, ok := strings.Cut(args[0], "/")
			if !ok || d == "" || a == "" {
				return fmt.Errorf("%q: name the app as DOMAIN/APP", args[0])
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.ClearEgressBlock(cmd.Context(), d, a)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) { fmt.Fprintf(w, "%s may reach the outside again (by its policy).\n", args[0]) })
		},
	}
	eg.AddCommand(clear)
	cmd.AddCommand(eg)
	secrets := &cobra.Command{Use: "secrets", Short: "The platform key that seals secrets at rest"}
	secrets.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Seal every secret (env values, cartridge passwords, alias keys) with a new platform key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var v apitypes.SecretsRotation
			stop := c.spinner("Rotating the platform key")
			v, err = cl.RotateSecrets(cmd.Context())
			stop()
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "New platform key in %s; %d records sealed again, the old key dropped. Keep a copy of the key apart from database backups.\n", v.KeyFile, v.Resealed)
			})
		},
	})
	cmd.AddCommand(secrets)
	cmd.AddCommand(c.backupAdminCmd())
	storeCmd := &cobra.Command{Use: "store", Short: "Where the platform keeps its records"}
	var advertise, nodeName string
	migrate := &cobra.Command{
		Use:   "migrate --advertise ADDRESS",
		Short: "Move a machine that runs alone from SQLite to a new cluster's etcd, with its apps serving",
		Long: "Move a machine that runs alone from SQLite to a new cluster's store (an embedded etcd member), live:\n" +
			"changes are refused for a few seconds while a new server process takes over the sockets, starts the\n" +
			"member and moves every record; requests and gears run on. Other machines then join with `gantry node token`.",
		Example: "  gantry admin store migrate --advertise 192.0.2.1",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if advertise == "" {
				return errors.New("--advertise ADDRESS is required: the address other machines will reach this one at")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			stop := c.spinner("Moving the records to etcd")
			v, err := cl.MigrateStore(cmd.Context(), apitypes.StoreMigrateRequest{Advertise: advertise, NodeName: nodeName})
			stop()
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "The records are in etcd now; this machine serves as the first of a cluster at %s.\nOther machines join through %s with a token from `gantry node token`.\n", v.Advertise, v.JoinURL)
			})
		},
	}
	migrate.Flags().StringVar(&advertise, "advertise", "", "the IP address other machines will reach this one at")
	migrate.Flags().StringVar(&nodeName, "node-name", "", "this machine's node name (default: its host name)")
	storeCmd.AddCommand(migrate)
	cmd.AddCommand(storeCmd)
	cmd.AddCommand(c.grantCmd())
	cmd.AddCommand(&cobra.Command{
		Use:   "doctor",
		Short: "Check the server's host: kernel, cgroups, runc, nftables, forwarding, firewalls (Docker, ufw, firewalld), DNS for gears, ports, disk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			checks, err := cl.Doctor(cmd.Context())
			if err != nil {
				return err
			}
			bad := 0
			err = c.out(checks, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				for _, ch := range checks {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", ch.Status, ch.Name, ch.Detail)
					if ch.Fix != "" && ch.Status != "ok" {
						fmt.Fprintf(tw, "\t\tfix: %s\n", ch.Fix)
					}
				}
				tw.Flush()
			})
			for _, ch := range checks {
				if ch.Status == "error" {
					bad++
				}
			}
			if err == nil && bad > 0 {
				return fmt.Errorf("%d check(s) failed: see the fixes above", bad)
			}
			return err
		},
	})
	return cmd
}

func printEgress(w io.Writer, app string, v *apitypes.EgressView) {
	if v.Router != nil && v.Router.Bound {
		printEgressRouter(w, app, v.Router)
		fmt.Fprintln(w, "\nThe rules below do not apply to direct connections while the app is bound to the egress router.")
	}
	if !v.Enforced {
		fmt.Fprintln(w, "Note: gears are plain processes on this server; the policy is kept but not enforced.")
	}
	if v.Blocked {
		fmt.Fprintln(w, "BLOCKED: a port scan was suspected; all outbound traffic but the platform's is refused until an operator runs `gantry admin egress clear`.")
	}
	defer func() {
		for _, list := range []struct {
			title string
			rs    []apitypes.EgressRefusal
		}{{"Refused by the policy in the last 10 minutes:", v.Refused}, {"Refused by the destination or unreachable in the last 10 minutes:", v.Failed}} {
			if len(list.rs) == 0 {
				continue
			}
			fmt.Fprintln(w, "\n"+list.title)
			var rows [][]string
			for _, r := range list.rs {
				rows = append(rows, []string{"  " + r.Dest, r.Proto, strconv.FormatInt(r.Packets, 10) + " packets"})
			}
			table(w, nil, rows)
		}
	}()
	if len(v.Rules) == 0 {
		fmt.Fprintf(w, "%s has no egress rules: every destination is %sed (the platform default).\n", app, v.Default)
		return
	}
	var rows [][]string
	for _, r := range v.Rules {
		note := r.Meaning
		if r.ShadowedBy > 0 {
			note += fmt.Sprintf(" (never applies: rule %d decides first)", r.ShadowedBy)
		}
		rows = append(rows, []string{strconv.Itoa(r.N), r.Action, r.Rule, note})
	}
	rows = append(rows, []string{"-", v.Default, "(default)", "when no rule matches"})
	table(w, []string{"#", "ACTION", "RULE", "MATCHES"}, rows)
}
