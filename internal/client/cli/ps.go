package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// psRow is one process of an app as `gantry ps` shows it.
type psRow struct {
	Process  string `json:"process"`
	Gear     string `json:"gear,omitempty"`
	State    string `json:"state"`
	Node     string `json:"node,omitempty"`
	Address  string `json:"address"`
	Restarts int    `json:"restarts"`
}

func (c *cli) psCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps APP",
		Short: "An app's processes: web and worker gears, one-off runs and cartridges",
		Example: `  gantry ps blog
  gantry ps blog --json
  gantry ps scale blog worker=3 web=2`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			app, err := cl.App(ctx, d, a)
			if err != nil {
				return err
			}
			rows := []psRow{}
			gears := append([]apitypes.GearView(nil), app.Gears...)
			order := map[string]int{"web": 0, "run": 2, "cron": 2, "release": 2}
			rank := func(t string) int {
				if r, ok := order[t]; ok {
					return r
				}
				return 1 // workers after web
			}
			sort.SliceStable(gears, func(i, j int) bool {
				ri, rj := rank(gears[i].Type), rank(gears[j].Type)
				if ri != rj {
					return ri < rj
				}
				return gears[i].Type < gears[j].Type
			})
			for _, g := range gears {
				state := g.State
				if g.Process != "" && g.Process != "running" {
					state += " (" + g.Process + ")"
				}
				rows = append(rows, psRow{Process: g.Type, Gear: g.ID, State: state, Node: g.Node,
					Address: g.IP + ":" + strconv.Itoa(g.Port), Restarts: g.Restarts})
			}
			for _, cart := range app.Cartridges {
				state := "running"
				if !cart.Running {
					state = "stopped"
				}
				rows = append(rows, psRow{Process: cart.Name, State: state, Address: fmt.Sprintf("%s:%d", cart.Host, cart.Port)})
			}
			return c.out(rows, func(w io.Writer) {
				if len(app.Processes) > 0 {
					counts := []string{fmt.Sprintf("web=%d", app.Scale)}
					for _, p := range app.Processes[1:] {
						counts = append(counts, fmt.Sprintf("%s=%d", p, app.Formation[p]))
					}
					fmt.Fprintf(w, "Formation: %s\n", strings.Join(counts, " "))
				}
				var t [][]string
				for _, r := range rows {
					t = append(t, []string{r.Process, r.Gear, r.State, r.Node, r.Address, strconv.Itoa(r.Restarts)})
				}
				table(w, []string{"PROCESS", "GEAR", "STATE", "NODE", "ADDRESS", "RESTARTS"}, t)
			})
		}),
	}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	cmd.AddCommand(&cobra.Command{
		Use:   "scale APP TYPE=N...",
		Short: "Run N gears of each process type (Procfile workers; web sets the fixed web scale)",
		Example: `  gantry ps scale blog worker=3
  gantry ps scale blog worker=0 web=2`,
		Args: cobra.MinimumNArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, rest []string) error {
			counts := map[string]int{}
			for _, arg := range rest {
				name, n, ok := strings.Cut(arg, "=")
				v, err := strconv.Atoi(n)
				if !ok || name == "" || err != nil {
					return fmt.Errorf("%q is not TYPE=N: use e.g. worker=2", arg)
				}
				counts[name] = v
			}
			app, err := cl.ScaleProcesses(ctx, d, a, counts)
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				parts := []string{fmt.Sprintf("web=%d", app.Scale)}
				for _, p := range app.Processes[min(1, len(app.Processes)):] {
					parts = append(parts, fmt.Sprintf("%s=%d", p, app.Formation[p]))
				}
				fmt.Fprintf(w, "%s now runs %s.\n", app.Name, strings.Join(parts, " "))
			})
		}),
	})
	return cmd
}
