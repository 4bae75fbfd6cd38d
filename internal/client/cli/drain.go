package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
)

func (c *cli) drainCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "drain", Short: "Ship an app's logs to a syslog server or an HTTPS endpoint"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.AddCommand(&cobra.Command{
		Use:   "add APP URL",
		Short: "Ship every line of the app (gears, workers, cron, runs, cartridges, router access lines) to a drain",
		Long: `URL is one of:
  syslog://HOST[:514]        RFC 5424 messages over TCP, octet counting (RFC 6587)
  syslog+tls://HOST[:6514]   the same over TLS
  https://HOST/PATH          JSON batches, POSTed
Messages name the app (APP-NAME domain/app), the process and gear (PROCID
web.GEAR, worker.GEAR, cron.JOB, router) and the stream (MSGID). A drain that is
down is retried with back-off; up to 10000 lines wait for it, and lines beyond
that are dropped, counted in 'gantry drain list', and said in the drain's stream.`,
		Example: `  gantry drain add blog syslog+tls://logs.example.com:6514
  gantry drain add blog https://logs.example.com/ingest?token=SECRET`,
		Args: cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rest []string) error {
			v, err := cl.AddDrain(ctx, d, a, rest[0])
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s now drains to %s (drain %s).\n", a, v.URL, v.ID)
			})
		}),
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list APP",
		Short: "The app's drains, with the lines this server sent, dropped and holds for each",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			ds, err := cl.Drains(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(ds, func(w io.Writer) {
				if len(ds) == 0 {
					fmt.Fprintf(w, "%s has no drains: add one with `gantry drain add %s URL`.\n", a, a)
					return
				}
				var t [][]string
				for _, v := range ds {
					t = append(t, []string{v.ID, v.URL, v.State, strconv.FormatUint(v.Sent, 10), strconv.FormatUint(v.Dropped, 10), strconv.Itoa(v.Buffered), v.LastError})
				}
				table(w, []string{"ID", "URL", "STATE", "SENT", "DROPPED", "BUFFERED", "LAST ERROR"}, t)
			})
		}),
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "remove APP ID",
		Short: "Stop shipping to a drain",
		Args:  cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rest []string) error {
			if err := cl.RemoveDrain(ctx, d, a, rest[0]); err != nil {
				return err
			}
			return c.out(map[string]string{"removed": rest[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "Drain %s of %s removed.\n", rest[0], a)
			})
		}),
	})
	return cmd
}
