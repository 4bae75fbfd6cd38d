// Command gantry is Gantry's single binary: the server, the CLI, and the
// small helpers the server runs (a gear's supervisor, the git hook, the
// static file server).
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/gantry-paas/gantry/internal/client/cli"
	"github.com/gantry-paas/gantry/internal/control/builder"
	_ "github.com/gantry-paas/gantry/internal/node/helpers" // shim and gear-init: run from its init
	"github.com/gantry-paas/gantry/internal/server"
	"github.com/gantry-paas/gantry/internal/staticsite"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "hook": // gantry hook pre-receive
			if len(os.Args) == 3 && os.Args[2] == "pre-receive" {
				os.Exit(builder.HookMain(os.Stdin, os.Stdout, os.Stderr))
			}
		case "static-serve":
			os.Exit(staticsite.Main())
		}
	}
	stop := profile()
	code := cli.Main(cli.Options{Version: version, Daemon: []*cobra.Command{server.Command(version)}}, os.Args[1:])
	stop()
	os.Exit(code)
}

// profile writes a CPU profile to $GANTRY_CPUPROFILE.PID and a heap
// profile (allocations since the start, and what is in use at the end) to
// $GANTRY_MEMPROFILE.PID when they are set (for benchmarks: where the
// server's or the CLI's time and memory go).
func profile() func() {
	stop := func() {}
	if path := os.Getenv("GANTRY_CPUPROFILE"); path != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
			pprof.StartCPUProfile(f)
			stop = func() { pprof.StopCPUProfile(); f.Close() }
		}
	}
	if path := os.Getenv("GANTRY_MEMPROFILE"); path != "" {
		cpu := stop
		stop = func() {
			cpu()
			if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}
	}
	return stop
}
