package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *cli) aliasCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alias", Short: "Custom hostnames of an app, with their certificates"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	add := &cobra.Command{
		Use:   "add APP HOST",
		Short: "Route a hostname of yours to the app",
		Long: `Routes HOST to the app over http and https. Point the name's DNS at this
platform. A www. alias also makes the bare domain redirect to it. Without an
uploaded certificate, the alias gets one by ACME when the platform has it set up.`,
		Example: `  gantry alias add blog www.example.com
  gantry alias add blog '*.example.org'`,
		Args: cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			v, err := cl.AddAlias(ctx, d, a, args[0])
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s now serves %s at %s\n", a, v.Host, v.URL)
				if v.RedirectsFrom != "" {
					fmt.Fprintf(w, "%s redirects to it.\n", v.RedirectsFrom)
				}
				if v.Certificate.Source == "none" {
					fmt.Fprintf(w, "For HTTPS, upload its certificate: gantry alias cert %s %s --certificate FILE --private-key FILE\n", a, v.Host)
				}
			})
		}),
	}
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List the app's custom hostnames and their certificates",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			vs, err := cl.Aliases(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(vs, func(w io.Writer) {
				if len(vs) == 0 {
					fmt.Fprintf(w, "%s has no aliases: add one with `gantry alias add %s HOST`.\n", a, a)
					return
				}
				printAliases(w, vs)
			})
		}),
	}
	remove := &cobra.Command{
		Use:   "remove APP HOST",
		Short: "Stop routing a hostname to the app (its certificate goes too)",
		Args:  cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			if err := cl.RemoveAlias(ctx, d, a, args[0]); err != nil {
				return err
			}
			return c.out(map[string]string{"removed": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "%s no longer serves %s.\n", a, args[0])
			})
		}),
	}
	var certFile, keyFile, passphrase string
	var force, removeCert bool
	var cert *cobra.Command
	cert = &cobra.Command{
		Use:   "cert APP HOST --certificate FILE --private-key FILE [--passphrase P] [--force]",
		Short: "Upload the certificate an alias is served with (checked first; applied without a restart)",
		Long: `Uploads a PEM certificate (the server's first, then its chain) and its
private key (PKCS#1, PKCS#8 or SEC 1, encrypted ones with --passphrase). It is
checked before it replaces anything: the key matches, the chain verifies, the
names cover HOST, it is not expired (a warning under 30 days). A self-signed or
private-CA chain needs --force. --remove drops the uploaded certificate.`,
		Example: `  gantry alias cert blog www.example.com --certificate fullchain.pem --private-key privkey.pem
  gantry alias cert blog www.example.com --remove`,
		Args: cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			if removeCert {
				if err := cl.RemoveAliasCert(ctx, d, a, args[0]); err != nil {
					return err
				}
				return c.out(map[string]string{"removed": args[0]}, func(w io.Writer) {
					fmt.Fprintf(w, "Removed the uploaded certificate of %s.\n", args[0])
				})
			}
			if certFile == "" || keyFile == "" {
				return fmt.Errorf("pass --certificate FILE and --private-key FILE (PEM), or --remove")
			}
			certPEM, err := os.ReadFile(certFile)
			if err != nil {
				return fmt.Errorf("reading the certificate: %w", err)
			}
			keyPEM, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("reading the private key: %w", err)
			}
			if cert.Flags().Changed("passphrase") && passphrase == "-" {
				b, err := io.ReadAll(c.o.Stdin)
				if err != nil {
					return err
				}
				passphrase = strings.TrimRight(string(b), "\r\n")
			}
			v, err := cl.UploadAliasCert(ctx, d, a, args[0], apitypes.CertUpload{Certificate: string(certPEM), PrivateKey: string(keyPEM),
				Passphrase: passphrase, Force: force})
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s is served with the certificate for %s (issuer %s, valid until %s).\n", v.Host,
					strings.Join(v.Certificate.Names, ", "), v.Certificate.Issuer, v.Certificate.NotAfter.Local().Format(time.DateOnly))
				for _, warn := range v.Certificate.Warnings {
					fmt.Fprintf(c.o.Stderr, "Warning: %s\n", warn)
				}
			})
		}),
	}
	cert.Flags().StringVar(&certFile, "certificate", "", "PEM file: the certificate, then its chain")
	cert.Flags().StringVar(&keyFile, "private-key", "", "PEM file: the private key")
	cert.Flags().StringVar(&passphrase, "passphrase", "", "passphrase of an encrypted key (- reads it from standard input)")
	cert.Flags().BoolVar(&force, "force", false, "accept a chain browsers will not trust (self-signed, private CA)")
	cert.Flags().BoolVar(&removeCert, "remove", false, "remove the uploaded certificate")
	cmd.AddCommand(add, list, remove, cert)
	cmd.AddCommand(c.claimCmds()...)
	return cmd
}

func printAliases(w io.Writer, vs []apitypes.AliasView) {
	var rows [][]string
	for _, v := range vs {
		cert := v.Certificate.Source
		if len(v.Certificate.Names) > 0 {
			cert = fmt.Sprintf("%s, until %s", v.Certificate.Source, v.Certificate.NotAfter.Local().Format(time.DateOnly))
			if v.Certificate.Forced {
				cert += " (untrusted, forced)"
			}
		}
		redirect := "-"
		if v.RedirectsFrom != "" {
			redirect = v.RedirectsFrom + " -> " + v.Host
		}
		rows = append(rows, []string{v.Host, cert, redirect})
	}
	table(w, []string{"ALIAS", "CERTIFICATE", "REDIRECT"}, rows)
}

func (c *cli) routeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "route", Short: "TCP routes: a gear port exposed as raw TCP"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	var port, target int
	var sni string
	tcp := &cobra.Command{
		Use:   "tcp APP (--port N | --sni HOST) [--target-port M]",
		Short: "Expose a gear's TCP port on a platform port, or by SNI on the HTTPS port (TLS passthrough)",
		Long: `Clients connecting to the platform port (or to the HTTPS port with TLS for the
--sni name) reach port M of the app's gears (default: the web port), round-robin
over healthy gears. Members failing their health checks leave the pool and come
back when healthy.`,
		Example: `  gantry route tcp blog --port 15432 --target-port 5432
  gantry route tcp blog --sni db.example.com --target-port 5432`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			v, err := cl.AddTCPRoute(ctx, d, a, apitypes.TCPRouteRequest{Port: port, SNI: sni, TargetPort: target})
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s reaches %s at gear port %s (route %s).\n", v.Address, a, targetName(v.TargetPort), v.ID)
			})
		}),
	}
	tcp.Flags().IntVar(&port, "port", 0, "platform port to listen on (1024-65535)")
	tcp.Flags().StringVar(&sni, "sni", "", "TLS passthrough: serve this server name on the HTTPS port without terminating TLS")
	tcp.Flags().IntVar(&target, "target-port", 0, "port in each gear (default: the web port)")
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List the app's TCP routes",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			vs, err := cl.TCPRoutes(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(vs, func(w io.Writer) {
				if len(vs) == 0 {
					fmt.Fprintf(w, "%s has no TCP routes: add one with `gantry route tcp %s --port N`.\n", a, a)
					return
				}
				printTCPRoutes(w, vs)
			})
		}),
	}
	remove := &cobra.Command{
		Use:     "remove APP ID",
		Short:   "Remove a TCP route (its port closes; open connections stay)",
		Example: "  gantry route remove blog 15432\n  gantry route remove blog sni-db.example.com",
		Args:    cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			if err := cl.RemoveTCPRoute(ctx, d, a, args[0]); err != nil {
				return err
			}
			return c.out(map[string]string{"removed": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "Removed TCP route %s of %s.\n", args[0], a)
			})
		}),
	}
	cmd.AddCommand(tcp, list, remove)
	return cmd
}

func targetName(p int) string {
	if p == 0 {
		return "web"
	}
	return strconv.Itoa(p)
}

func printTCPRoutes(w io.Writer, vs []apitypes.TCPRouteView) {
	var rows [][]string
	for _, v := range vs {
		state := "serving"
		if v.Error != "" {
			state = "not served: " + v.Error
		}
		rows = append(rows, []string{v.ID, v.Address, targetName(v.TargetPort), state})
	}
	table(w, []string{"TCP ROUTE", "ADDRESS", "GEAR PORT", "STATE"}, rows)
}

func (c *cli) caCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The platform's certificate authority"}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the platform root certificate (PEM) for browsers and clients to trust",
		Example: `  gantry ca show > gantry-root.pem
  curl --cacert gantry-root.pem https://blog-acme.localhost:8443/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.CA(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprint(w, v.PEM)
				fmt.Fprintf(c.o.Stderr, "%s, SHA-256 %s, issues for *.%s\n", v.Subject, v.SHA256, v.CloudDomain)
			})
		},
	}
	cmd.AddCommand(show)
	return cmd
}

func httpsLine(app *apitypes.AppView) string {
	if app.HTTPSURL == "" {
		return "off on this platform"
	}
	switch app.HTTPS {
	case "redirect":
		return app.HTTPSURL + " (http redirects here)"
	case "off":
		return "off (https redirects to http)"
	}
	return app.HTTPSURL + " (and http)"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
