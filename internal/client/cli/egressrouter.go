package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// egressRouterCmds are `gantry egress proxy|redirect|tcp|router`: an
// app's use of the egress router. Any of them binds the app: its gears
// may then leave only through the router.
func (c *cli) egressRouterCmds() []*cobra.Command {
	show := func(a string) func(v apitypes.EgressRouterView) error {
		return func(v apitypes.EgressRouterView) error {
			return c.out(v, func(w io.Writer) { printEgressRouter(w, a, &v) })
		}
	}
	router := &cobra.Command{
		Use:   "router APP",
		Short: "Show how the app uses the egress router (proxy, redirects, TCP proxies)",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			v, err := cl.EgressRouter(ctx, d, a)
			if err != nil {
				return err
			}
			return show(a)(v)
		}),
	}
	var off bool
	proxy := &cobra.Command{
		Use:   "proxy APP ACL-ENTRY...",
		Short: "Send the app's HTTP and HTTPS through the egress router's proxy, allowed by an ACL",
		Long: `Binds the app to the egress router: its gears get HTTP_PROXY and HTTPS_PROXY
(the app restarts without downtime) and may leave only through the router.
An ACL entry is a hostname (api.example.com), a wildcard (*.example.com: the
names under example.com), a CIDR or address (for requests to IP addresses) or
all, each with an optional :PORT; a leading ! denies. A destination is allowed
when an entry allows it and no ! entry matches it. The entries replace the
previous ACL.`,
		Example: "  gantry egress proxy blog '*.example.com' '!bad.example.com' api.partner.org:443\n  gantry egress proxy blog --off",
		Args:    cobra.MinimumNArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, acl []string) error {
			// withApp passes the arguments after APP.
			var v apitypes.EgressRouterView
			var err error
			switch {
			case off && len(acl) > 0:
				return fmt.Errorf("--off takes no ACL entries")
			case off:
				err = c.spin("Turning the HTTP proxy off", func() error {
					var err error
					v, err = cl.RemoveEgressProxy(ctx, d, a)
					return err
				})
			case len(acl) == 0:
				return fmt.Errorf("give the ACL entries the proxy allows, e.g. gantry egress proxy %s '*.example.com'", a)
			default:
				err = c.spin("Setting the HTTP proxy", func() error {
					var err error
					v, err = cl.SetEgressProxy(ctx, d, a, acl)
					return err
				})
			}
			if err != nil {
				return err
			}
			return show(a)(v)
		}),
	}
	proxy.Flags().BoolVar(&off, "off", false, "stop using the HTTP proxy")
	var removeN int
	redirect := &cobra.Command{
		Use:   "redirect APP MATCH TARGET",
		Short: "Send the app's connections to MATCH through the egress router to TARGET (TCP)",
		Long: `MATCH is HOST:PORT, ADDRESS:PORT, CIDR:PORT or *:PORT (any address); the
gears' connections to it are caught in their namespace and spliced by the
egress router to TARGET (HOST:PORT). Binds the app to the egress router.`,
		Example: "  gantry egress redirect blog '*:25' smtp-relay.partner.com:587\n  gantry egress redirect blog --remove 1",
		Args:    cobra.RangeArgs(1, 3),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			var v apitypes.EgressRouterView
			switch {
			case removeN > 0 && len(args) == 0:
				var err error
				v, err = cl.RemoveEgressRedirect(ctx, d, a, removeN)
				if err != nil {
					return err
				}
			case removeN == 0 && len(args) == 2:
				var err error
				v, err = cl.AddEgressRedirect(ctx, d, a, args[0], args[1])
				if err != nil {
					return err
				}
			default:
				return fmt.Errorf("usage: gantry egress redirect APP MATCH TARGET, or gantry egress redirect APP --remove N")
			}
			return show(a)(v)
		}),
	}
	redirect.Flags().IntVar(&removeN, "remove", 0, "remove redirect N")
	var removeTCP bool
	tcp := &cobra.Command{
		Use:   "tcp APP PORT TARGET...",
		Short: "A TCP proxy on the egress router: PORT forwards to the targets (health-checked, round-robin)",
		Long: `The gears connect to $GANTRY_EGRESS_ROUTER:PORT; the router forwards each
connection to the next healthy target. Giving the port again replaces its
targets. Binds the app to the egress router.`,
		Example: "  gantry egress tcp blog 5432 db1.partner.com:5432 db2.partner.com:5432\n  gantry egress tcp blog 5432 --remove",
		Args:    cobra.MinimumNArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			port, err := strconv.Atoi(args[0])
			if err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("%q is not a port (1024-65535)", args[0])
			}
			var v apitypes.EgressRouterView
			switch {
			case removeTCP && len(args) == 1:
				v, err = cl.RemoveEgressTCP(ctx, d, a, port)
			case !removeTCP && len(args) > 1:
				v, err = cl.SetEgressTCP(ctx, d, a, port, args[1:])
			default:
				return fmt.Errorf("usage: gantry egress tcp APP PORT TARGET..., or gantry egress tcp APP PORT --remove")
			}
			if err != nil {
				return err
			}
			return show(a)(v)
		}),
	}
	tcp.Flags().BoolVar(&removeTCP, "remove", false, "remove the TCP proxy on PORT")
	return []*cobra.Command{router, proxy, redirect, tcp}
}

// spin runs f with a spinner on a terminal.
func (c *cli) spin(msg string, f func() error) error {
	stop := c.spinner(msg)
	defer stop()
	return f()
}

func printEgressRouter(w io.Writer, app string, v *apitypes.EgressRouterView) {
	if !v.Available {
		fmt.Fprintln(w, "There is no egress router on this server (it needs isolated gears: run the server as root).")
		return
	}
	if !v.Bound {
		fmt.Fprintf(w, "%s does not use the egress router: its gears leave directly (by its egress rules).\n", app)
		return
	}
	fmt.Fprintf(w, "%s is bound to the egress router at %s: its gears leave only through it.\n", app, v.Address)
	if v.Proxy != nil {
		fmt.Fprintf(w, "\nHTTP proxy %s (HTTP_PROXY, HTTPS_PROXY), ACL: %s\n", v.Proxy.URL, strings.Join(v.Proxy.ACL, " "))
	}
	if len(v.Redirects) > 0 {
		fmt.Fprintln(w, "\nRedirects:")
		var rows [][]string
		for _, r := range v.Redirects {
			rows = append(rows, []string{strconv.Itoa(r.N), r.Match, "->", r.Target})
		}
		table(w, []string{"#", "MATCH", "", "TARGET"}, rows)
	}
	if len(v.TCP) > 0 {
		fmt.Fprintln(w, "\nTCP proxies:")
		var rows [][]string
		for _, t := range v.TCP {
			var ts []string
			for _, dst := range t.Targets {
				state := "up"
				if !dst.Healthy {
					state = "down"
				}
				ts = append(ts, dst.Target+" ("+state+")")
			}
			note := strings.Join(ts, ", ")
			if t.Error != "" {
				note += "  NOT LISTENING: " + t.Error
			}
			rows = append(rows, []string{t.Address, "->", note})
		}
		table(w, []string{"CONNECT TO", "", "TARGETS"}, rows)
	}
}
