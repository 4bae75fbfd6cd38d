package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
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
		Short: "An app's processes: its web gears, one-off runs and cartridges",
		Example: `  gantry ps blog
  gantry ps blog --json`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			app, err := cl.App(ctx, d, a)
			if err != nil {
				return err
			}
			rows := []psRow{}
			for _, g := range app.Gears {
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
				var t [][]string
				for _, r := range rows {
					t = append(t, []string{r.Process, r.Gear, r.State, r.Node, r.Address, strconv.Itoa(r.Restarts)})
				}
				table(w, []string{"PROCESS", "GEAR", "STATE", "NODE", "ADDRESS", "RESTARTS"}, t)
			})
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	return cmd
}
