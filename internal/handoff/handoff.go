// Package handoff lets a running server give its listening sockets to a
// new process of itself (a restart, or a new binary at the same path) so
// that no connection is refused meanwhile: the new process starts with the
// sockets already bound, says when it serves, and only then does the old
// one stop accepting and finish its open requests and tunnels. It wraps
// github.com/cloudflare/tableflip (sockets passed as inherited
// descriptors, so connections waiting in a socket's backlog are kept).
//
// It must not decide when to hand off (the server does, on SIGHUP) nor
// stop anything itself.
package handoff

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"
)

// Handoff is the server's side of a hand-off; the zero of its methods'
// behaviour (when hand-off is unavailable) is plain listening.
type Handoff struct {
	upg *tableflip.Upgrader
	log *slog.Logger

	mu   sync.Mutex
	seen map[string]int // network/address -> sockets asked for so far
}

// New prepares the hand-off: sockets a previous process passed on are
// found by network and address. pidFile, if set, names the process that
// serves (for service managers).
func New(pidFile string, log *slog.Logger) *Handoff {
	if log == nil {
		log = slog.Default()
	}
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidFile})
	if err != nil {
		log.Warn("restarts will not hand sockets over", "err", err)
		return &Handoff{log: log}
	}
	return &Handoff{upg: upg, log: log}
}

// Inherited says whether this process took over from a previous one.
func (h *Handoff) Inherited() bool { return h.upg != nil && h.upg.HasParent() }

// Listen is net.Listen, through the sockets a previous process passed.
func (h *Handoff) Listen(network, addr string) (net.Listener, error) {
	return h.ListenWith(&net.ListenConfig{}, network, addr)
}

// ListenWith is Listen with a ListenConfig for a socket made here.
func (h *Handoff) ListenWith(lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	if h.upg == nil {
		return lc.Listen(context.Background(), network, addr)
	}
	return h.upg.ListenWithCallback(network, h.name(network, addr), func(network, _ string) (net.Listener, error) {
		return lc.Listen(context.Background(), network, addr)
	})
}

// name is the key a socket is passed under: its address, and how many
// sockets of that address were asked for before it. Several ask for
// 127.0.0.1:0; the new process asks in the same order as the old one
// (the server binds its fixed ports in a fixed order), so the n-th gets
// the n-th.
func (h *Handoff) name(network, addr string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[string]int{}
	}
	k := network + "/" + addr
	n := h.seen[k]
	h.seen[k] = n + 1
	return addr + "#" + strconv.Itoa(n)
}

// ListenPacket is net.ListenPacket, through the passed sockets.
func (h *Handoff) ListenPacket(network, addr string) (net.PacketConn, error) {
	if h.upg == nil {
		return net.ListenPacket(network, addr)
	}
	return h.upg.ListenPacketWithCallback(network, h.name(network, addr), func(network, _ string) (net.PacketConn, error) {
		return net.ListenPacket(network, addr)
	})
}

// Ready says this process serves: a previous one may now stop accepting.
func (h *Handoff) Ready() error {
	if h.upg == nil {
		return nil
	}
	return h.upg.Ready()
}

// ErrUnavailable is Upgrade's answer where sockets cannot be handed over.
var ErrUnavailable = errors.New("this process cannot hand its sockets over (see the log at start)")

// Upgrade starts a new process of the binary at the same path with the
// same arguments and waits until it serves (or fails: then this process
// goes on serving). While the process this one took over from still
// finishes its connections, it waits for it first (one hand-off at a
// time), until ctx ends.
func (h *Handoff) Upgrade(ctx context.Context) error {
	if h.upg == nil {
		return ErrUnavailable
	}
	if err := h.upg.WaitForParent(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return h.upg.Upgrade()
}

// Done is closed once a new process serves in this one's place.
func (h *Handoff) Done() <-chan struct{} {
	if h.upg == nil {
		return nil
	}
	return h.upg.Exit()
}

// Stop ends the hand-off machinery (at a plain shutdown).
func (h *Handoff) Stop() {
	if h.upg != nil {
		h.upg.Stop()
	}
}

// ListenShared binds a port that comes and goes with the configuration
// (TCP routes, egress TCP proxies) with SO_REUSEPORT, so that the process
// taking over binds it beside this one instead of failing while this one
// drains. (Fixed ports go through Listen: inherited, not shared.)
func ListenShared(lc net.ListenConfig, network, addr string) (net.Listener, error) {
	lc.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}
	return lc.Listen(context.Background(), network, addr)
}
