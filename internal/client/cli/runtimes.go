package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func (c *cli) runtimesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "runtimes",
		Short: "Language versions builds choose from (package.json engines, .python-version, go.mod)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.Runtimes(cmd.Context())
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				rows := [][]string{}
				for _, r := range v.Runtimes {
					rows = append(rows, []string{r.Language, r.Version, r.Source})
				}
				table(w, []string{"LANGUAGE", "VERSION", "FROM"}, rows)
				for _, p := range v.Problems {
					fmt.Fprintf(w, "\nnot a runtime: %s\n", p)
				}
			})
		},
	}
}
