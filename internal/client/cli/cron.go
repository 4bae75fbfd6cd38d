package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
)

func (c *cli) cronCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cron", Short: "An app's scheduled jobs: app.json cron entries and .openshift/cron/PERIOD/ executables"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.AddCommand(&cobra.Command{
		Use:   "list APP",
		Short: "The app's cron jobs with their next run and their last run's exit status",
		Long: `Jobs come from the active deployment: app.json's "cron" entries
({"command": "…", "schedule": "*/5 * * * *"}, times in UTC) and the executables
in .openshift/cron/{minutely,hourly,daily,weekly,monthly}/ (or .gantry/cron/).
Each run is a fresh one-off gear with the app's code and env; its output is in
gantry logs as cron/JOB. A job still running when it is due again is skipped.`,
		Example: `  gantry cron list blog
  gantry cron list blog --json`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			jobs, err := cl.Cron(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(jobs, func(w io.Writer) {
				if len(jobs) == 0 {
					fmt.Fprintf(w, "%s has no cron jobs: add app.json \"cron\" entries or executables in .openshift/cron/hourly/ (or minutely, daily, weekly, monthly).\n", a)
					return
				}
				var t [][]string
				for _, j := range jobs {
					next, last := "-", "never"
					if j.Next != nil {
						next = j.Next.Local().Format("2006-01-02 15:04:05")
					}
					switch {
					case j.Running:
						last = "running since " + j.Last.Local().Format("15:04:05")
					case j.Error != "":
						last = "could not run: " + j.Error
					case j.Last != nil:
						last = fmt.Sprintf("%s exit %d (%s)", j.Last.Local().Format("2006-01-02 15:04:05"), *j.Exit, j.Took)
					}
					runs := strconv.Itoa(j.Runs)
					if j.Failures > 0 {
						runs += fmt.Sprintf(", %d failed", j.Failures)
					}
					if j.Skipped > 0 {
						runs += fmt.Sprintf(", %d skipped", j.Skipped)
					}
					t = append(t, []string{j.ID, j.Schedule, j.Command, next, last, runs})
				}
				table(w, []string{"JOB", "SCHEDULE", "COMMAND", "NEXT", "LAST", "RUNS"}, t)
				fmt.Fprintf(w, "Times of the schedules are UTC; now is %s UTC.\n", time.Now().UTC().Format("15:04:05"))
			})
		}),
	})
	return cmd
}
