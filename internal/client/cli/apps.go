package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/client"
	"github.com/gantry-paas/gantry/internal/control/apitypes"
)

// resolveApp turns "APP" or "DOMAIN/APP" into the app's domain and name.
func (c *cli) resolveApp(ctx context.Context, cl *client.Client, arg string) (string, string, error) {
	if d, a, ok := strings.Cut(arg, "/"); ok {
		return d, a, nil
	}
	if c.domain != "" {
		return c.domain, arg, nil
	}
	apps, err := cl.Apps(ctx, arg)
	if err != nil {
		return "", "", err
	}
	switch len(apps) {
	case 0:
		return "", "", fmt.Errorf("you have no app named %q: see `gantry app list`", arg)
	case 1:
		return apps[0].Domain, apps[0].Name, nil
	}
	var opts []string
	for _, a := range apps {
		opts = append(opts, a.Domain+"/"+a.Name)
	}
	return "", "", fmt.Errorf("several apps are named %q: say which with DOMAIN/APP (%s)", arg, strings.Join(opts, ", "))
}

// withApp runs fn with the client and the resolved app of args[0].
// onlyDomain is the domain a new app goes to: --domain, or the caller's
// only one.
func (c *cli) onlyDomain(ctx context.Context, cl *client.Client) (string, error) {
	if c.domain != "" {
		return c.domain, nil
	}
	ds, err := cl.Domains(ctx)
	if err != nil {
		return "", err
	}
	switch len(ds) {
	case 0:
		return "", fmt.Errorf("you have no domain yet: create one with `gantry domain create NAME`")
	case 1:
		return ds[0].Name, nil
	}
	return "", fmt.Errorf("you have several domains: choose one with --domain")
}

func (c *cli) withApp(fn func(ctx context.Context, cl *client.Client, domain, app string, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := c.client()
		if err != nil {
			return err
		}
		d, a, err := c.resolveApp(cmd.Context(), cl, args[0])
		if err != nil {
			return err
		}
		return fn(cmd.Context(), cl, d, a, args[1:])
	}
}

func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Create and manage apps"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")

	var typ, size, fromCode, imageRef string
	var reg registryFlags
	var scale int
	var scalable bool
	create := &cobra.Command{
		Use:   "create NAME [--type TYPE | --from-code URL|PATH | --image REF]",
		Short: "Create an app: empty (its first git push deploys), with starter code (--type), or from your repository (--from-code)",
		Long: `Without --type or --from-code the app is empty: push any repository to it,
its own history included, and the push deploys it. --type starts the app
with starter code of that type and deploys it. --from-code pushes an
existing repository (a directory here, or a URL this machine clones) and
deploys it. --image runs an image from a registry (namespaced gears):
its ENTRYPOINT/CMD as PID 1, its user mapped onto the app's own, on the
port it EXPOSEs (or $PORT); the registry's login is kept encrypted for the
next deploys.`,
		Example: `  gantry app create blog
  gantry app create blog --type nodejs
  gantry app create chat --from-code https://github.com/socketio/chat-example
  gantry app create api --from-code ~/src/api --domain acme
  echo "$TOKEN" | gantry app create web --image registry.example.com/team/web:1.4 --registry-username ci --registry-password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if (typ != "") && (fromCode != "") || (typ != "" || fromCode != "") && imageRef != "" {
				return fmt.Errorf("choose one of --type (starter code), --from-code (your repository) or --image, not several")
			}
			password, err := reg.password(cmd.InOrStdin())
			if err != nil {
				return err
			}
			domain, err := c.onlyDomain(cmd.Context(), cl)
			if err != nil {
				return err
			}
			codeDir := ""
			if fromCode != "" {
				dir, done, err := c.prepareCode(cmd.Context(), fromCode)
				if err != nil {
					return err
				}
				defer done()
				codeDir = dir
			}
			var app apitypes.AppView
			doing := "Creating " + args[0]
			if typ != "" {
				doing += " and deploying its starter code"
			}
			if imageRef != "" {
				doing += " and deploying " + imageRef
			}
			stop := c.spinner(doing)
			req := apitypes.CreateAppRequest{Name: args[0], Type: typ, Scale: scale, Size: size, Scalable: scalable,
				Image: imageRef, RegistryUsername: reg.username, RegistryPassword: password}
			app, err = cl.CreateApp(cmd.Context(), domain, req)
			stop()
			if err != nil {
				return err
			}
			if fromCode != "" {
				if err := c.pushCode(cmd.Context(), cl, app, codeDir, fromCode); err != nil {
					return err
				}
				if app, err = cl.App(cmd.Context(), app.Domain, app.Name); err != nil {
					return err
				}
			}
			return c.out(app, func(w io.Writer) {
				fmt.Fprintf(w, "Application %s was created in domain %s.\n\n", app.Name, app.Domain)
				table(w, nil, [][]string{
					{"  URL:", app.URL},
					{"  Git URL:", app.GitURL},
					{"  Git over HTTP:", app.GitHTTPURL},
					{"  Type:", app.Type},
				})
				switch {
				case app.DeployError != "":
					fmt.Fprintf(w, "\nThe starter code did not deploy: %s\n", app.DeployError)
				case imageRef != "":
					fmt.Fprintf(w, "\nIt runs %s. Deploy a new image with:\n  gantry app deploy %s --image REF\n", imageRef, app.Name)
					return
				case typ == "" && fromCode == "":
					fmt.Fprintf(w, "\nIt is empty: push your repository to deploy it:\n  git remote add gantry %s\n  git push gantry HEAD:%s\n", app.GitURL, app.Branch)
					return
				}
				fmt.Fprintf(w, "\nGet the code, change it, and git push to deploy:\n  git clone %s %s\n", app.GitURL, app.Name)
			})
		},
	}
	create.Flags().StringVarP(&typ, "type", "t", "", "start with starter code of this type: nodejs, python, go or static")
	create.Flags().StringVar(&fromCode, "from-code", "", "push this repository (a directory, or a URL cloned here) and deploy it")
	create.Flags().StringVar(&imageRef, "image", "", "run this image from a registry (e.g. registry.example.com/team/web:1.4)")
	reg.add(create)
	create.Flags().IntVar(&scale, "scale", 0, "gears to run (default 1)")
	create.Flags().StringVarP(&size, "gear-size", "g", "", "small (512 MiB, 250 processes), medium (1 GiB) or large (2 GiB)")
	create.Flags().BoolVar(&scalable, "scalable", false, "scale automatically between 1 and 3 gears on live connections")

	var newSize, httpsMode, connectTO, readTO, tunnelTO, stopGrace, registry string
	var setReg registryFlags

	var set *cobra.Command
	set = &cobra.Command{
		Use:   "set APP [--gear-size SIZE] [--https MODE] [--connect-timeout D] [--read-timeout D] [--tunnel-timeout D] [--stop-grace D]",
		Short: "Change an app's settings: gear size (applies at once), HTTPS mode, router timeouts, stop grace time",
		Example: `  gantry app set blog --gear-size medium
  gantry app set blog --https redirect
  gantry app set blog --tunnel-timeout 4h --read-timeout 60s
  gantry app set blog --stop-grace 2m
  echo "$TOKEN" | gantry app set blog --registry registry.example.com --registry-username ci --registry-password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			var req apitypes.UpdateAppRequest
			changed := false
			for flag, to := range map[string]*string{"gear-size": &req.Size, "https": &req.HTTPS, "connect-timeout": &req.ConnectTimeout, "read-timeout": &req.ReadTimeout, "tunnel-timeout": &req.TunnelTimeout, "stop-grace": &req.StopGrace, "registry": &req.Registry} {
				if set.Flags().Changed(flag) {
					*to = set.Flags().Lookup(flag).Value.String()
					changed = true
				}
			}
			if !changed {
				return fmt.Errorf("nothing to change: pass --gear-size, --https, --connect-timeout, --read-timeout, --tunnel-timeout, --stop-grace or --registry")
			}
			if registry != "" && registry != "-" {
				pw, err := setReg.password(set.InOrStdin())
				if err != nil {
					return err
				}
				req.RegistryUsername, req.RegistryPassword = setReg.username, pw
			}
			app, err := cl.UpdateApp(ctx, d, a, req)
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				if newSize != "" {
					fmt.Fprintf(w, "%s now has %s gears.\n", app.Name, app.GearSize)
					if app.Isolation != "namespaces" {
						fmt.Fprintln(w, "Note: gears are plain processes on this server; sizes are recorded but not enforced.")
					}
				}
				if httpsMode != "" || connectTO != "" || readTO != "" || tunnelTO != "" {
					fmt.Fprintf(w, "%s: HTTPS %s, connect timeout %s, read timeout %s, tunnel timeout %s.\n", app.Name, app.HTTPS,
						orDefault(app.ConnectTimeout, "5s"), orDefault(app.ReadTimeout, "none"), orDefault(app.TunnelTimeout, "1h"))
				}
				if stopGrace != "" {
					fmt.Fprintf(w, "%s: processes get %s after SIGTERM before they are killed (gears started from now; `gantry app restart` applies it to all).\n", app.Name, app.StopGrace)
				}
			})
		}),
	}
	set.Flags().StringVarP(&newSize, "gear-size", "g", "", "small, medium or large")
	set.Flags().StringVar(&httpsMode, "https", "", "allow (http and https), redirect (http goes to https) or off (https goes to http)")
	set.Flags().StringVar(&registry, "registry", "", "a registry (host[:port]) whose login the app's images and Dockerfile base images use (- removes it); with --registry-username")
	setReg.add(set)
	set.Flags().StringVar(&stopGrace, "stop-grace", "", "how long a process (a worker finishing its job) has after SIGTERM before it is killed (default 30s)")
	set.Flags().StringVar(&connectTO, "connect-timeout", "", "how long the router tries to reach a gear (default to reset)")
	set.Flags().StringVar(&readTO, "read-timeout", "", "how long the app may take to start answering (default: no limit)")
	set.Flags().StringVar(&tunnelTO, "tunnel-timeout", "", "idle WebSocket and TCP connections close after this (default 1h)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List your apps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			apps, err := cl.Apps(cmd.Context(), "")
			if err != nil {
				return err
			}
			return c.out(apps, func(w io.Writer) {
				if len(apps) == 0 {
					fmt.Fprintln(w, "You have no apps yet: create one with `gantry app create NAME --type nodejs`.")
					return
				}
				var rows [][]string
				for _, a := range apps {
					rows = append(rows, []string{a.Name, a.Domain, a.Type, a.State, strconv.Itoa(len(a.Gears)), a.URL})
				}
				table(w, []string{"NAME", "DOMAIN", "TYPE", "STATE", "GEARS", "URL"}, rows)
			})
		},
	}

	show := &cobra.Command{
		Use:   "show APP",
		Short: "Show an app, its addresses and its gears",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			app, err := cl.App(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) { printApp(w, &app) })
		}),
	}

	action := func(name, short, doing string) *cobra.Command {
		return &cobra.Command{
			Use:   name + " APP",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
				var app apitypes.AppView
				stop := c.spinner(doing + " " + a)
				app, err := cl.AppAction(ctx, d, a, name)
				stop()
				if err != nil {
					return err
				}
				return c.out(app, func(w io.Writer) {
					fmt.Fprintf(w, "%s is %s.\n", app.Name, app.State)
				})
			}),
		}
	}

	var yes bool
	del := &cobra.Command{
		Use:   "delete APP",
		Short: "Delete an app with its repository, deployments, data and logs",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			if !yes {
				if !c.isTerminal() {
					return fmt.Errorf("deleting %s/%s removes its code, deployments and data: pass --yes to confirm", d, a)
				}
				fmt.Fprintf(c.o.Stderr, "This deletes %s/%s with its git repository, deployments, data and logs.\nType the app name to confirm: ", d, a)
				line, _ := bufio.NewReader(c.o.Stdin).ReadString('\n')
				if strings.TrimSpace(line) != a {
					return fmt.Errorf("not deleted: the name did not match")
				}
			}
			if err := cl.DeleteApp(ctx, d, a); err != nil {
				return err
			}
			return c.out(map[string]any{"deleted": true, "name": a, "domain": d}, func(w io.Writer) {
				fmt.Fprintf(w, "Deleted %s/%s.\n", d, a)
			})
		}),
	}
	del.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")

	purge := &cobra.Command{
		Use:   "purge-cache APP",
		Short: "Drop the app's build cache (npm, pip, Go); the next build starts cold",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			v, err := cl.PurgeCache(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "Dropped the build cache of %s (%.1f MiB); the next build fills it again.\n", a, float64(v.Freed)/(1<<20))
			})
		}),
	}

	cmd.AddCommand(c.scaleCmds()...)
	cmd.AddCommand(c.appDeployCmd())
	cmd.AddCommand(create, list, show, set, purge,
		action("start", "Start an app", "Starting"),
		action("stop", "Stop an app (the router answers 503)", "Stopping"),
		action("restart", "Restart an app without dropping requests", "Restarting"),
		del)
	return cmd
}

func printApp(w io.Writer, app *apitypes.AppView) {
	fmt.Fprintf(w, "%s (%s) in domain %s: %s\n\n", app.Name, app.Type, app.Domain, app.State)
	table(w, nil, [][]string{
		{"  URL:", app.URL},
		{"  Git URL:", app.GitURL},
		{"  Git over HTTP:", app.GitHTTPURL},
		{"  Deploys branch:", app.Branch},
		{"  Gear size:", app.GearSize + " (isolation: " + app.Isolation + ")"},
		{"  Scaling:", scalingLine(app)},
		{"  HTTPS:", httpsLine(app)},
		{"  Connections:", strconv.Itoa(app.Connections) + " live (requests in flight, WebSockets, TCP)"},
		{"  Disk:", diskLine(app)},
		{"  Deployment:", orDash(app.ActiveDeployment)},
		{"  Created:", app.Created.Local().Format(time.DateTime)},
	})
	fmt.Fprintln(w)
	if len(app.Aliases) > 0 {
		printAliases(w, app.Aliases)
		fmt.Fprintln(w)
	}
	if len(app.TCPRoutes) > 0 {
		printTCPRoutes(w, app.TCPRoutes)
		fmt.Fprintln(w)
	}
	for _, cart := range app.Cartridges {
		printCartridge(w, cart)
	}
	if len(app.Gears) == 0 {
		fmt.Fprintln(w, "No gears are running.")
		return
	}
	var rows [][]string
	for _, g := range app.Gears {
		last := g.LastExit
		if g.Restarts > 0 {
			last = fmt.Sprintf("%d restarts, last: %s", g.Restarts, g.LastExit)
		}
		rows = append(rows, []string{g.ID, g.IP + ":" + strconv.Itoa(g.Port), g.State, g.Process, strconv.Itoa(g.PID), g.Deployment, g.Isolation, orDash(g.Node), orDash(last)})
	}
	table(w, []string{"GEAR", "ENDPOINT", "STATE", "PROCESS", "PID", "DEPLOYMENT", "ISOLATION", "NODE", "RESTARTS"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) envCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "env", Short: "Set, unset and list an app's environment variables"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	patch := func(ctx context.Context, cl *client.Client, d, a string, body apitypes.EnvPatch) error {
		stop := c.spinner("Updating the environment and restarting " + a)
		env, err := cl.PatchEnv(ctx, d, a, body)
		stop()
		if err != nil {
			return err
		}
		return c.out(env, func(w io.Writer) { printEnv(w, env) })
	}
	set := &cobra.Command{
		Use:     "set APP KEY=VALUE...",
		Short:   "Set variables; a running app restarts without downtime",
		Example: "  gantry env set blog GREETING=hello DEBUG=1",
		Args:    cobra.MinimumNArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			vars := map[string]string{}
			for _, kv := range args {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("%q is not KEY=VALUE", kv)
				}
				vars[k] = v
			}
			return patch(ctx, cl, d, a, apitypes.EnvPatch{Set: vars})
		}),
	}
	unset := &cobra.Command{
		Use:   "unset APP KEY...",
		Short: "Remove variables",
		Args:  cobra.MinimumNArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			return patch(ctx, cl, d, a, apitypes.EnvPatch{Unset: args})
		}),
	}
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List variables",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			env, err := cl.Env(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(env, func(w io.Writer) { printEnv(w, env) })
		}),
	}
	cmd.AddCommand(set, unset, list)
	return cmd
}

func printEnv(w io.Writer, env map[string]string) {
	if len(env) == 0 {
		fmt.Fprintln(w, "No variables set.")
		return
	}
	var keys []string
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var rows [][]string
	for _, k := range keys {
		rows = append(rows, []string{k, env[k]})
	}
	table(w, []string{"NAME", "VALUE"}, rows)
}

func (c *cli) logsCmd() *cobra.Command {
	return c.logsCommand("logs APP", "Show an app's logs (-f to follow)", false)
}

func (c *cli) tailCmd() *cobra.Command {
	return c.logsCommand("tail APP", "Stream the logs of all the app's gears and cartridges, prefixed by gear and process", true)
}

func (c *cli) logsCommand(use, short string, tail bool) *cobra.Command {
	var follow bool
	lines := 100
	if tail {
		follow, lines = true, 10
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			body, err := cl.Logs(ctx, d, a, lines, follow)
			if err != nil {
				return err
			}
			defer body.Close()
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if c.json {
					fmt.Fprintln(c.o.Stdout, sc.Text())
					continue
				}
				var l applog.Line
				if json.Unmarshal(sc.Bytes(), &l) == nil {
					fmt.Fprintf(c.o.Stdout, "%s %s/%s[%s]: %s\n", l.Time.Local().Format("2006-01-02 15:04:05.000"), l.Process, l.Gear, l.Stream, l.Text)
				}
			}
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return sc.Err()
		}),
	}
	cmd.Flags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	if !tail {
		cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new lines")
	}
	cmd.Flags().IntVar(&lines, "lines", lines, "how many past lines")
	return cmd
}

func (c *cli) deploymentCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "deployment", Short: "List deployments and roll back"}
	cmd.PersistentFlags().StringVarP(&c.domain, "domain", "n", "", "the app's domain (when you have several)")
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List an app's deployments, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, _ []string) error {
			deps, err := cl.Deployments(ctx, d, a)
			if err != nil {
				return err
			}
			return c.out(deps, func(w io.Writer) {
				var rows [][]string
				for _, dp := range deps {
					active := ""
					if dp.Active {
						active = "*"
					}
					rows = append(rows, []string{active, dp.ID, dp.Commit[:min(10, len(dp.Commit))], dp.Cartridge, orDash(dp.Runtime), dp.Created.Local().Format(time.DateTime)})
				}
				table(w, []string{"ACTIVE", "ID", "COMMIT", "TYPE", "RUNTIME", "CREATED"}, rows)
			})
		}),
	}
	activate := &cobra.Command{
		Use:   "activate APP ID",
		Short: "Make a deployment live again (rollback), without downtime",
		Args:  cobra.ExactArgs(2),
		RunE: c.withApp(func(ctx context.Context, cl *client.Client, d, a string, args []string) error {
			var app apitypes.AppView
			stop := c.spinner("Activating deployment " + args[0])
			app, err := cl.ActivateDeployment(ctx, d, a, args[0])
			stop()
			if err != nil {
				return err
			}
			return c.out(app, func(w io.Writer) {
				fmt.Fprintf(w, "Deployment %s of %s is live at %s\n", app.ActiveDeployment, app.Name, app.URL)
			})
		}),
	}
	cmd.AddCommand(list, activate)
	return cmd
}

func scalingLine(app *apitypes.AppView) string {
	s := fmt.Sprintf("fixed, %d gears", app.MinGears)
	if app.MaxGears > app.MinGears {
		s = fmt.Sprintf("automatic, %d to %d gears at %d connections per gear", app.MinGears, app.MaxGears, app.TargetConns)
	}
	if app.IdleAfter != "" {
		s += ", idles after " + app.IdleAfter
	}
	if app.Idle {
		s += " (idle now)"
	}
	return s
}

func diskLine(app *apitypes.AppView) string {
	if app.DiskLimit == 0 {
		return "no limit on this platform"
	}
	mib := func(n int64) string { return strconv.FormatInt(n>>20, 10) + " MiB" }
	return mib(app.DiskUsed) + " of " + mib(app.DiskLimit) + " used"
}
