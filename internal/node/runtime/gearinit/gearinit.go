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
//
// It runs before every namespaced gear's app, so it imports only standard
// packages whose initialisation comes early: netlink is spoken through
// syscall, not a library that brings net (see node/helpers).
package gearinit

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Main runs args as the gear's process and returns its exit code.
func Main(args []string) int {
	var wait []byte
	if len(args) > 1 && args[0] == "--wait-addr" {
		a, ok := parseIPv4(args[1])
		if !ok {
			fmt.Fprintf(os.Stderr, "gear-init: --wait-addr %q: not an IPv4 address (gears' addresses are)\n", args[1])
			return 2
		}
		wait, args = a, args[2:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if wait != nil {
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
	if p, err := LookPath(path); err == nil {
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

// waitAddr returns once an interface of this network namespace has the
// IPv4 address a: netlink's address events, subscribed before the first
// look so that none is missed. It waits without bound when timeout is 0:
// a standby gear waits for its app's wake, and the agent stops a gear it
// gives up.
func waitAddr(a []byte, timeout time.Duration) error {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	// A look now and then in case events are lost; often when they are
	// not allowed.
	every := time.Second
	events, err := subscribeAddrs()
	if err != nil {
		every = 50 * time.Millisecond
	}
	defer func() {
		if events >= 0 {
			syscall.Close(events)
		}
	}()
	buf := make([]byte, 16<<10)
	for !hasAddr(a) {
		wait := every
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("the gear's network (address %s) did not come up within %s", formatIPv4(a), timeout)
			}
			wait = min(wait, left)
		}
		if events < 0 {
			time.Sleep(wait)
			continue
		}
		// Any message (or the receive timeout) is a reason to look again.
		tv := syscall.NsecToTimeval(max(wait, time.Microsecond).Nanoseconds()) // (zero would be no timeout)
		syscall.SetsockoptTimeval(events, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		if _, _, err := syscall.Recvfrom(events, buf, 0); err != nil && err != syscall.EAGAIN && err != syscall.EINTR && err != syscall.ENOBUFS {
			syscall.Close(events)
			events, every = -1, 50*time.Millisecond
		}
	}
	return nil
}

// rtmgrpIPv4Ifaddr is the netlink group of IPv4 address changes
// (RTMGRP_IPV4_IFADDR, which package syscall does not name).
const rtmgrpIPv4Ifaddr = 0x10

// subscribeAddrs opens a netlink socket that receives the namespace's
// IPv4 address changes.
func subscribeAddrs() (int, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: rtmgrpIPv4Ifaddr}); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// hasAddr reports whether an interface of this namespace has the IPv4
// address a.
func hasAddr(a []byte) bool {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_INET)
	if err != nil {
		return false
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return false
	}
	for i := range msgs {
		if msgs[i].Header.Type != syscall.RTM_NEWADDR {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&msgs[i])
		if err != nil {
			continue
		}
		for _, at := range attrs {
			if (at.Attr.Type == syscall.IFA_LOCAL || at.Attr.Type == syscall.IFA_ADDRESS) && string(at.Value) == string(a) {
				return true
			}
		}
	}
	return false
}

// parseIPv4 parses a dotted-quad IPv4 address.
func parseIPv4(s string) ([]byte, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return nil, false
	}
	a := make([]byte, 4)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 || p == "" || (len(p) > 1 && p[0] == '0') || strings.TrimLeft(p, "0123456789") != "" {
			return nil, false
		}
		a[i] = byte(n)
	}
	return a, true
}

func formatIPv4(a []byte) string {
	return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3])
}

// DefaultPath is where programs are looked for after PATH (and what a
// process started without one gets).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookPath finds an executable as a shell would, for the gear's command
// (its PATH: /usr/local/go/bin for Go, the app's node_modules/.bin…) and
// for the shim's runc: the first executable regular file in PATH's
// absolute directories, then in DefaultPath's. A name with a slash is
// taken as it is. The helpers have no os/exec (see node/helpers).
func LookPath(file string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range strings.Split(os.Getenv("PATH")+":"+DefaultPath, ":") {
		if !strings.HasPrefix(dir, "/") {
			continue // a relative PATH entry is not looked in
		}
		p := dir + "/" + file
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH or %s: %w", file, DefaultPath, os.ErrNotExist)
}
