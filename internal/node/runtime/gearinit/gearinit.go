// Package gearinit is PID 1 inside a namespaced gear (`gantry gear-init
// [--wait-addr IP] -- CMD...`), as tini is for containers: the kernel
// ignores signals that PID 1 does not handle, and orphans are re-parented
// to it. It starts the command in its own process group, forwards every
// signal to that group, reaps all children, and exits with the command's
// status.
//
// With --wait-addr it first waits until the gear's network namespace has
// that address: the agent gives it last, once the gear's rules and
// outbound policy are in place, so that the container can be made while
// the network is (the address is the gate), and the app never runs
// without its policy.
package gearinit

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Main runs args as the gear's process and returns its exit code.
func Main(args []string) int {
	var wait netip.Addr
	if len(args) > 1 && args[0] == "--wait-addr" {
		a, err := netip.ParseAddr(args[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "gear-init: --wait-addr %q: %v\n", args[1], err)
			return 2
		}
		wait, args = a, args[2:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if wait.IsValid() {
		if err := waitAddr(wait, 0); err != nil {
			fmt.Fprintf(os.Stderr, "gear-init: %v\n", err)
			return 1
		}
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "gear-init: no command")
		return 2
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTTIN)
	path := args[0]
	if p, err := lookPath(path); err == nil {
		path = p
	}
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "gear-init: starting %s: %v\n", args[0], err)
		return 127
	}
	exit := make(chan int, 1)
	go func() {
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return
			}
			if wpid == pid {
				if ws.Signaled() {
					exit <- 128 + int(ws.Signal())
				} else {
					exit <- ws.ExitStatus()
				}
				return
			}
		}
	}()
	for {
		select {
		case code := <-exit:
			return code
		case s := <-sigs:
			if s == syscall.SIGCHLD || s == syscall.SIGURG {
				continue
			}
			if sig, ok := s.(syscall.Signal); ok {
				syscall.Kill(-pid, sig)
			}
		}
	}
}

// waitAddr returns once an interface of this network namespace has a:
// netlink's address events, subscribed before the first look so that
// none is missed. It waits without bound when timeout is 0: a standby
// gear waits for its app's wake, and the agent stops a gear it gives up.
func waitAddr(a netip.Addr, timeout time.Duration) error {
	updates := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	subscribed := netlink.AddrSubscribe(updates, done) == nil
	has := func() bool {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return false
		}
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				return true
			}
		}
		return false
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		deadline = time.After(timeout)
	}
	// A look now and then in case events are lost; often when they are
	// not allowed.
	every := time.Second
	if !subscribed {
		every = 50 * time.Millisecond
	}
	poll := time.NewTicker(every)
	defer poll.Stop()
	for !has() {
		select {
		case u, ok := <-updates:
			if !ok && subscribed {
				updates, subscribed = nil, false
				poll.Reset(50 * time.Millisecond)
			}
			_ = u
		case <-poll.C:
		case <-deadline:
			return fmt.Errorf("the gear's network (address %s) did not come up within %s", a, timeout)
		}
	}
	return nil
}

func lookPath(file string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	// The gear's PATH (its environment's: /usr/local/go/bin for Go, the
	// app's node_modules/.bin…), then the usual places.
	if p, err := exec.LookPath(file); err == nil && filepath.IsAbs(p) {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		p := dir + "/" + file
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}
