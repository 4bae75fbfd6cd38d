package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
			res, err := cl.RestoreSnapshot(ctx, d, a, rest[0], to)
			stop()
			if err != nil {
				return err
			}
			return c.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "%s is restored from snapshot %s and serves at %s\n", res.App.Name, rest[0], res.App.URL)
				printNotes(w, res.Notes)
			})
		}),
	}
	restore.Flags().StringVar(&to, "to", "", "make a new app of this name (its own databases and credentials) instead of restoring in place")
	cmd.AddCommand(restore, c.snapshotExportCmd(), c.snapshotImportCmd())
	return cmd
}

func printNotes(w io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func (c *cli) snapshotExportCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export APP ID [-o FILE]",
		Short: "Write a snapshot as one portable archive (tar + zstd) that `gantry snapshot import` reads on another platform",
		Long: `The archive holds the app's settings, repository, database dumps and data
directory; also its secrets (env values, database passwords, certificate
keys) as they are: keep it as safe as the app itself.`,
		Example: `  gantry snapshot export blog 3f2a9c1e > blog.tar.zst
  gantry snapshot export blog 3f2a9c1e -o blog.tar.zst`,
		Args: cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rest []string) error {
			var w io.Writer = c.o.Stdout
			if file != "" {
				f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if err != nil {
					return fmt.Errorf("%w (the archive is not written over an existing file)", err)
				}
				defer f.Close()
				w = f
			} else if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				return fmt.Errorf("the archive is binary: redirect it to a file (> %s.tar.zst) or use -o FILE", a)
			}
			stop := c.spinner("Exporting snapshot " + rest[0] + " of " + a)
			body, err := cl.ExportSnapshot(ctx, d, a, rest[0])
			if err != nil {
				stop()
				return err
			}
			defer body.Close()
			n, err := io.Copy(w, body)
			stop()
			if err != nil {
				if file != "" {
					os.Remove(file)
				}
				return fmt.Errorf("the export broke off after %s: %w", bytesHuman(n), err)
			}
			if file != "" {
				return c.out(map[string]any{"file": file, "bytes": n}, func(w io.Writer) {
					fmt.Fprintf(w, "Snapshot %s of %s written to %s (%s). It holds the app's secrets: keep it safe.\n", rest[0], a, file, bytesHuman(n))
				})
			}
			fmt.Fprintf(c.o.Stderr, "Snapshot %s of %s exported (%s). It holds the app's secrets: keep it safe.\n", rest[0], a, bytesHuman(n))
			return nil
		}),
	}
	cmd.Flags().StringVarP(&file, "output", "o", "", "write the archive to FILE (made 0600) instead of stdout")
	return cmd
}

func (c *cli) snapshotImportCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "import [NEWAPP] [-f FILE]",
		Short: "Make a new app from an archive of `gantry snapshot export` (its own hostname and databases)",
		Example: `  gantry snapshot import blog < blog.tar.zst
  gantry snapshot import blog-copy -f blog.tar.zst -n team`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			domain, err := c.onlyDomain(cmd.Context(), cl)
			if err != nil {
				return err
			}
			var r io.Reader = c.o.Stdin
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			} else if c.isTerminal() {
				return fmt.Errorf("give the archive on stdin (< blog.tar.zst) or with -f FILE")
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			stop := c.spinner("Importing the snapshot into a new app")
			res, err := cl.ImportSnapshot(cmd.Context(), domain, name, r)
			stop()
			if err != nil {
				return err
			}
			return c.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "%s is made from the archive and serves at %s\n", res.App.Name, res.App.URL)
				printNotes(w, res.Notes)
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the archive from FILE instead of stdin")
	return cmd
}

func (c *cli) backupAdminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "The platform's backup repository"}
	var keyStdin bool
	target := &cobra.Command{
		Use:   "target [set LOCATION [--key-stdin]]",
		Short: "Show or set where the platform keeps its snapshots: a directory, sftp://USER@HOST[:PORT]/PATH or rest:https://HOST/PATH",
		Long: `Without arguments, shows the target and the platform's SSH public key (to
authorize on an SFTP server). With set, the new repository is reached and
made (or opened) before it replaces the current one; snapshots saved
before stay where they are and are restored from there. --key-stdin opens
a repository made elsewhere with its own key (only while the platform has
no snapshots under its current key).`,
		Example: `  gantry admin backup target
  gantry admin backup target set /mnt/backups/gantry
  gantry admin backup target set sftp://backup@backup.example.com/gantry`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var t apitypes.BackupTargetView
			switch {
			case len(args) == 0:
				t, err = cl.BackupTarget(cmd.Context())
			case len(args) == 2 && args[0] == "set":
				req := apitypes.BackupTargetRequest{Location: args[1]}
				if keyStdin {
					line, rerr := stdinLine(c.o.Stdin)
					if rerr != nil {
						return rerr
					}
					req.Key = strings.TrimSpace(line)
				}
				stop := c.spinner("Reaching " + args[1])
				t, err = cl.SetBackupTarget(cmd.Context(), req)
				stop()
			default:
				return fmt.Errorf("use `gantry admin backup target` or `gantry admin backup target set LOCATION`")
			}
			if err != nil {
				return err
			}
			return c.out(t, func(w io.Writer) {
				fmt.Fprintf(w, "Backup target: %s (set %s", t.Location, t.Set.Local().Format("2006-01-02 15:04"))
				if t.By != "" {
					fmt.Fprintf(w, " by %s", t.By)
				}
				fmt.Fprintf(w, ")\nSSH key for SFTP targets (authorize it there):\n  %s\n", t.PublicKey)
			})
		},
	}
	target.Flags().BoolVar(&keyStdin, "key-stdin", false, "read the repository's key from stdin (a repository made elsewhere)")
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the backup repository's integrity, reading all its data back (restic check --read-data)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			stop := c.spinner("Reading the backup repository back")
			v, err := cl.CheckBackups(cmd.Context())
			stop()
			if err != nil {
				return err
			}
			if c.json {
				if err := c.out(v, nil); err != nil {
					return err
				}
			} else {
				fmt.Fprint(c.o.Stdout, v.Output)
			}
			if !v.OK {
				return fmt.Errorf("%s", v.Error)
			}
			if !c.json {
				fmt.Fprintln(c.o.Stdout, "The backup repository is whole: every snapshot reads back.")
			}
			return nil
		},
	}
	cmd.AddCommand(target, check)
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
