package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// registryFlags are an image registry's login: the password comes from
// stdin or GANTRY_REGISTRY_PASSWORD, never from the command line (where
// other users and the shell's history would see it).
type registryFlags struct {
	username string
	stdin    bool
}

func (r *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.username, "registry-username", "", "login to the image's registry (kept encrypted for the next deploys)")
	cmd.Flags().BoolVar(&r.stdin, "registry-password-stdin", false, "read the registry password or token from stdin (else GANTRY_REGISTRY_PASSWORD)")
}

func (r *registryFlags) password(stdin io.Reader) (string, error) {
	switch {
	case r.username == "" && r.stdin:
		return "", fmt.Errorf("--registry-password-stdin needs --registry-username")
	case r.username == "":
		return "", nil
	case r.stdin:
		return stdinLine(stdin)
	}
	if p := os.Getenv("GANTRY_REGISTRY_PASSWORD"); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("give the registry password with --registry-password-stdin or GANTRY_REGISTRY_PASSWORD")
}

func (c *cli) appDeployCmd() *cobra.Command {
	var ref string
	var reg registryFlags
	cmd := &cobra.Command{
		Use:   "deploy APP --image REF",
		Short: "Deploy an image from a registry to an app, without dropping a request",
		Example: `  gantry app deploy web --image registry.example.com/team/web:1.5
  echo "$TOKEN" | gantry app deploy web --image registry.example.com/team/web:1.5 --registry-username ci --registry-password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			if ref == "" {
				return fmt.Errorf("name the image: --image registry.example.com/team/web:1.5 (code deploys with git push)")
			}
			password, err := reg.password(os.Stdin)
			if err != nil {
				return err
			}
			stop := c.spinner("Deploying " + ref + " to " + a)
			res, err := cl.DeployImage(ctx, d, a, apitypes.ImageRequest{Image: ref, RegistryUsername: reg.username, RegistryPassword: password})
			stop()
			if err != nil {
				return err
			}
			return c.out(res, func(w io.Writer) { fmt.Fprint(w, res.Output) })
		}),
	}
	cmd.Flags().StringVar(&ref, "image", "", "the image to run, e.g. registry.example.com/team/web:1.5")
	reg.add(cmd)
	return cmd
}
