package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

func (c *cli) scaleCmds() []*cobra.Command {
	var gears, minG, maxG, target int
	var scale *cobra.Command
	scale = &cobra.Command{
		Use:   "scale APP (--gears N | --min N --max M) [--target-connections T]",
		Short: "Run a fixed number of gears, or scale automatically on live connections",
		Example: `  gantry app scale blog --gears 3
  gantry app scale blog --min 1 --max 5 --target-connections 16`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			var req apitypes.ScaleRequest
			for flag, to := range map[string]**int{"gears": &req.Gears, "min": &req.Min, "max": &req.Max, "target-connections": &req.Target} {
				if scale.Flags().Changed(flag) {
					n, _ := scale.Flags().GetInt(flag)
					*to = &n
				}
			}
			var app apitypes.AppView
			stop := c.spinner("Scaling " + a)
			app, err := cl.Scale(ctx, d, a, req)
			stop()
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				serving, draining := gearCounts(app.Gears)
				if app.MinGears == app.MaxGears {
					fmt.Fprintf(w, "%s runs %s.\n", app.Name, plural(serving, "gear"))
				} else {
					fmt.Fprintf(w, "%s scales between %d and %d gears at %d connections per gear (now %d).\n", app.Name, app.MinGears, app.MaxGears, app.TargetConns, serving)
				}
				if draining > 0 {
					fmt.Fprintf(w, "%s finishing open requests before stopping.\n", plural(draining, "more gear")+map[bool]string{true: " is", false: " are"}[draining == 1])
				}
			})
		}),
	}
	scale.Flags().IntVar(&gears, "gears", 0, "run exactly N gears")
	scale.Flags().IntVar(&minG, "min", 0, "fewest gears (automatic scaling; 0 allows idling)")
	scale.Flags().IntVar(&maxG, "max", 0, "most gears (automatic scaling)")
	scale.Flags().IntVar(&target, "target-connections", 0, "concurrent connections per gear to aim at (default 16)")

	var after string
	var now bool
	idle := &cobra.Command{
		Use:   "idle APP (--after DURATION | --now)",
		Short: "Idle an app to zero gears (now, or after a time without traffic); the next request wakes it",
		Example: `  gantry app idle blog --after 30m
  gantry app idle blog --now
  gantry app idle blog --after off`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			var app apitypes.AppView
			app, err := cl.Idle(ctx, d, a, apitypes.IdleRequest{After: after, Now: now})
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				switch {
				case app.Idle:
					fmt.Fprintf(w, "%s is idle; the next request wakes it.\n", app.Name)
				case app.IdleAfter != "":
					fmt.Fprintf(w, "%s idles after %s without traffic.\n", app.Name, app.IdleAfter)
				default:
					fmt.Fprintf(w, "%s does not idle.\n", app.Name)
				}
			})
		}),
	}
	idle.Flags().StringVar(&after, "after", "", "idle after this long without traffic (e.g. 30m), or off")
	idle.Flags().BoolVar(&now, "now", false, "idle now")

	events := &cobra.Command{
		Use:   "events APP",
		Short: "Scaling, idle and wake decisions with their reasons",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			evs, err := cl.Events(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(evs, func(w io.Writer) {
				if len(evs) == 0 {
					fmt.Fprintln(w, "No scaling events yet.")
					return
				}
				var rows [][]string
				for _, e := range evs {
					rows = append(rows, []string{e.Time.Local().Format(time.DateTime), e.Kind, strconv.Itoa(e.From) + " -> " + strconv.Itoa(e.To), e.Reason})
				}
				table(w, []string{"TIME", "EVENT", "GEARS", "REASON"}, rows)
			})
		}),
	}
	return []*cobra.Command{scale, idle, events}
}

// gearCounts splits an app's gears into those that serve (or are about to)
// and those draining away.
func gearCounts(gears []apitypes.GearView) (serving, draining int) {
	for _, g := range gears {
		if g.State == "draining" {
			draining++
		} else {
			serving++
		}
	}
	return serving, draining
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
