// Package helpers runs the small programs the server starts for every
// gear — its supervisor (`gantry shim`) and its PID 1 (`gantry
// gear-init`) — from its package initialisation, before the rest of the
// binary's.
//
// Go initialises every package a binary links before main, whichever
// command runs: for gantry that is some 360 packages (etcd's server, gRPC,
// protobuf, Prometheus…), ~12 ms per process. A namespaced gear's start
// runs the two in a row before the app (shim, then gear-init in the
// container). Go initialises packages in dependency order, choosing among
// those ready the first by import path (Go 1.21). This package sorts
// before go.etcd.io, golang.org and google.golang.org, and the helpers
// import only standard packages that are ready early: no net/http (so
// static-serve stays in main), and none whose path sorts late (net,
// path/filepath and so os/exec, x/sys/unix), each of which would let
// every package that sorts before it and is ready go first. So some 90
// packages' inits come before this one's (~2 ms), not 360 (~7 ms). A
// helper's process exits from here.
package helpers

import (
	"os"

	"github.com/gantry-paas/gantry/internal/node/runtime/gearinit"
	"github.com/gantry-paas/gantry/internal/node/shim"
)

func init() {
	if code, ok := Run(os.Args); ok {
		os.Exit(code)
	}
}

// Run runs the helper args name, if it is one.
func Run(args []string) (int, bool) {
	if len(args) < 2 {
		return 0, false
	}
	switch args[1] {
	case "shim": // gantry shim GEARDIR
		if len(args) == 3 {
			return shim.Main(args[2]), true
		}
	case "gear-init": // PID 1 of a namespaced gear
		return gearinit.Main(args[2:]), true
	}
	return 0, false
}
