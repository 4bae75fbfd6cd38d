package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *cli) snapshotCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{Use: "snapshot", Short: "Save an app whole (repository, data, database, settings) and restore it"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.AddCommand(&cobra.Command{
		Use:   "save APP",
		Short: "Save a snapshot: git repository, active deployment, data directory, PostgreSQL database, settings",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			stop := c.spinner("Saving a snapshot of " + a)
			s, err := cl.SaveSnapshot(ctx, d, a)
			stop()
			if err != nil {
				return err
			}
			return c.out(s, func(w io.Writer) {
				fmt.Fprintf(w, "Snapshot %s of %s saved: %s; %s read, %s new in the repository.\n", s.ShortID, a, strings.Join(s.Holds, ", "), bytesHuman(s.Size), bytesHuman(s.Added))
			})
		}),
	}, &cobra.Command{
		Use:   "list APP",
		Short: "The app's snapshots, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			ss, err := cl.Snapshots(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(ss, func(w io.Writer) {
				if len(ss) == 0 {
					fmt.Fprintf(w, "%s has no snapshots: save one with `gantry snapshot save %s`.\n", a, a)
					return
				}
				var t [][]string
				for _, s := range ss {
					t = append(t, []string{s.ShortID, s.Time.Local().Format("2006-01-02 15:04:05"), bytesHuman(s.Size), bytesHuman(s.Added), strings.Join(s.Holds, ",")})
				}
				table(w, []string{"ID", "TIME", "SIZE", "ADDED", "HOLDS"}, t)
			})
		}),
	})
	restore := &cobra.Command{
		Use:   "restore APP ID [--to NEWAPP]",
		Short: "Restore the app in place from a snapshot (its deployment rolls out like a deploy), or make a new app of it",
		Example: `  gantry snapshot restore blog 3f2a9c1e
  gantry snapshot restore blog 3f2a9c1e --to blog-copy`,
		Args: cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rest []string) error {
			doing := "Restoring " + a + " from " + rest[0]
			if to != "" {
				doing = "Making " + to + " from snapshot " + rest[0] + " of " + a
			}
			stop := c.spinner(doing)
			app, err := cl.RestoreSnapshot(ctx, d, a, rest[0], to)
			stop()
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				fmt.Fprintf(w, "%s is restored from snapshot %s and serves at %s\n", app.Name, rest[0], app.URL)
			})
		}),
	}
	restore.Flags().StringVar(&to, "to", "", "make a new app of this name (its own databases and credentials) instead of restoring in place")
	cmd.AddCommand(restore)
	return cmd
}

func (c *cli) backupAdminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "The platform's backup repository"}
	cmd.AddCommand(&cobra.Command{
		Use:   "key",
		Short: "Show the backup repository's key: with it alone, stock restic restores any snapshot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			k, err := cl.BackupKey(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(k, func(w io.Writer) {
				fmt.Fprintf(w, "Repository: %s\nKey:        %s\n\nKeep the key apart from this machine. To restore without Gantry:\n  %s\n", k.Repository, k.Key, k.Restore)
			})
		},
	})
	return cmd
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (c *cli) backupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Scheduled snapshots of an app, with retention"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	var req apitypes.BackupScheduleRequest
	schedule := &cobra.Command{
		Use:   "schedule APP (--every D --keep-daily N… | --off)",
		Short: "Save a snapshot of the app every so often and keep some (restic's forget policy)",
		Example: `  gantry backup schedule blog --every 24h --keep-daily 7 --keep-weekly 4 --keep-monthly 6
  gantry backup schedule blog --off`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			app, err := cl.ScheduleBackups(ctx, d, a, req)
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				if app.Backups == "" {
					fmt.Fprintf(w, "%s has no scheduled backups; its snapshots stay.\n", a)
					return
				}
				fmt.Fprintf(w, "%s backups: %s.\n", a, app.Backups)
			})
		}),
	}
	f := schedule.Flags()
	f.StringVar(&req.Every, "every", "", "how often, e.g. 24h")
	f.IntVar(&req.KeepLast, "keep-last", 0, "keep the last N snapshots")
	f.IntVar(&req.KeepDaily, "keep-daily", 0, "keep one a day for N days")
	f.IntVar(&req.KeepWeekly, "keep-weekly", 0, "keep one a week for N weeks")
	f.IntVar(&req.KeepMonthly, "keep-monthly", 0, "keep one a month for N months")
	f.BoolVar(&req.Off, "off", false, "stop the scheduled backups")
	cmd.AddCommand(schedule)
	return cmd
}
