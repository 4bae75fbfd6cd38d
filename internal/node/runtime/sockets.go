package runtime

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Socket is a TCP socket listening in a gear.
type Socket struct {
	Port     int
	Loopback bool // on the gear's loopback only
}

const tcpListen = 10

// listeningOn dumps the listening TCP sockets sock_diag reports through h.
func listeningOn(h *netlink.Handle) ([]*netlink.Socket, error) {
	var socks []*netlink.Socket
	for _, fam := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		var ss []*netlink.Socket
		var err error
		for try := 0; try < 3; try++ { // dumps can be interrupted
			if ss, err = h.SocketDiagTCP(fam); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
		for _, s := range ss {
			if s.State == tcpListen {
				socks = append(socks, s)
			}
		}
	}
	return socks, nil
}

func sockets(ss []*netlink.Socket, keep func(*netlink.Socket) bool) []Socket {
	var out []Socket
	for _, s := range ss {
		if keep == nil || keep(s) {
			out = append(out, Socket{Port: int(s.ID.SourcePort), Loopback: s.ID.Source.IsLoopback()})
		}
	}
	return out
}

// Listening lists the sockets of the gear's own processes (its process
// group's, found through /proc), among the host's.
func (p *Process) Listening(gearID string) ([]Socket, error) {
	ss, err := listeningOn(&netlink.Handle{})
	if err != nil {
		return nil, err
	}
	owned := map[uint32]bool{}
	if st, err := p.State(gearID); err == nil && st.PID > 0 {
		owned = socketInodes(st.PID)
	}
	return sockets(ss, func(s *netlink.Socket) bool { return owned[s.INode] }), nil
}

// socketInodes are the sockets held by the processes of a process group.
func socketInodes(pgid int) map[uint32]bool {
	out := map[uint32]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name()))
			if n, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				if v, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 32); err == nil {
					out[uint32(v)] = true
				}
			}
		}
	}
	return out
}

// Dial connects to addr from the host.
func (p *Process) Dial(_ string, addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}

// Listening lists every socket of the gear's network namespace.
func (n *Namespaces) Listening(gearID string) ([]Socket, error) {
	ns, err := netns.GetFromPath(n.Netns(gearID))
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	// Ask for sock_diag explicitly: a handle made without it would fall
	// back to the caller's namespace and list the host's sockets.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	ss, err := listeningOn(h)
	if err != nil {
		return nil, err
	}
	return sockets(ss, nil), nil
}

// Dial connects to addr from inside the gear's network namespace, so
// services on the gear's loopback are reachable too.
func (n *Namespaces) Dial(gearID, addr string) (net.Conn, error) {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	ns, err := netns.GetFromPath(n.Netns(gearID))
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	return net.DialTimeout("tcp", addr, 5*time.Second)
}
