package scheduler

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// BlockBits is the size of a machine's block of the gear subnet: /24
// (254 gears, 256 machines in the default /16), smaller blocks only when
// the subnet is too small for 16 of them.
func BlockBits(subnet netip.Prefix) int {
	return max(24, subnet.Bits()+4)
}

// ClaimBlock gives a machine its block of the cluster's gear subnet: the
// one it has, or a free one (the one holding most of the machine's gears
// when it ran alone before, so that they keep their addresses). The
// first claim records the subnet; a machine started with another one is
// refused, as is one whose own address is inside it.
func ClaimBlock(st *store.Store, node string, subnet netip.Prefix, addr netip.Addr) (netip.Prefix, error) {
	subnet = subnet.Masked()
	if subnet.Contains(addr) {
		return netip.Prefix{}, fmt.Errorf("this machine's address %s is inside the gear subnet %s: start every machine with another --gear-subnet", addr, subnet)
	}
	bits := BlockBits(subnet)
	if bits > 30 {
		return netip.Prefix{}, fmt.Errorf("the gear subnet %s is too small to give machines blocks: use a /26 or larger", subnet)
	}
	var block netip.Prefix
	err := st.Update(func(tx *store.Tx) error {
		block = netip.Prefix{}
		switch have := store.GearSubnet(tx); have {
		case "":
			if err := store.SetGearSubnet(tx, subnet.String()); err != nil {
				return err
			}
		case subnet.String():
		default:
			return fmt.Errorf("the gear subnet %s is not the cluster's (%s): start this machine with --gear-subnet %s", subnet, have, have)
		}
		nodes, err := store.ListNodes(tx)
		if err != nil {
			return err
		}
		var self store.Node
		used := map[netip.Prefix]string{}
		for _, n := range nodes {
			if n.Name == node {
				self = n
				continue
			}
			if b, err := netip.ParsePrefix(n.GearBlock); err == nil {
				used[b.Masked()] = n.Name
			}
		}
		if b, err := netip.ParsePrefix(self.GearBlock); err == nil && subnet.Contains(b.Addr()) && b.Bits() == bits {
			other, taken := used[b.Masked()]
			if taken {
				return fmt.Errorf("machine %s holds the gear block %s of this one: remove one of them (gantry node remove)", other, b)
			}
			block = b.Masked()
			return nil
		}
		// A free block, preferring the one that holds most of this
		// machine's gears.
		count := map[netip.Prefix]int{}
		gears, err := store.ListGears(tx)
		if err != nil {
			return err
		}
		for _, g := range gears {
			if ip, err := netip.ParseAddr(g.IP); err == nil && (g.Node == node || g.Node == "") && subnet.Contains(ip) {
				b, _ := ip.Prefix(bits)
				count[b]++
			}
		}
		best := -1
		for b := netip.PrefixFrom(subnet.Addr(), bits); b.IsValid() && subnet.Contains(b.Addr()); b = next(b) {
			if _, taken := used[b]; !taken && count[b] > best {
				block, best = b, count[b]
			}
		}
		if best < 0 {
			return fmt.Errorf("the gear subnet %s has no free block for another machine (%d in use): use a larger --gear-subnet", subnet, len(used))
		}
		if errors.Is(tx.Get(store.NodeKey(node), &self), store.ErrNotFound) {
			self = store.Node{Name: node}
		}
		self.GearBlock = block.String()
		return tx.Put(store.NodeKey(node), &self)
	})
	return block, err
}

// next is the block after b (invalid past the address space).
func next(b netip.Prefix) netip.Prefix {
	a := b.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += 1 << (32 - b.Bits())
	if v == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), b.Bits())
}

// Overlay modes a machine may ask for.
const (
	OverlayAuto      = "auto"
	OverlayVXLAN     = "vxlan"
	OverlayWireGuard = "wireguard"
)

// ClaimOverlay settles the cluster's gear overlay: the first machine
// records its choice (auto: WireGuard where its kernel has it, else
// VXLAN); the others take it, and are refused when they ask for another
// or their kernel lacks it. wgErr is this machine's WireGuard probe.
func ClaimOverlay(st *store.Store, want string, wgErr error) (string, error) {
	if want == "" {
		want = OverlayAuto
	}
	if want != OverlayAuto && want != OverlayVXLAN && want != OverlayWireGuard {
		return "", fmt.Errorf("--overlay %q: choose auto, vxlan or wireguard", want)
	}
	if want == OverlayWireGuard && wgErr != nil {
		return "", fmt.Errorf("--overlay wireguard: %w (load the wireguard kernel module, or use --overlay vxlan)", wgErr)
	}
	var mode string
	err := st.Update(func(tx *store.Tx) error {
		mode = store.OverlayMode(tx)
		switch {
		case mode == "":
			mode = want
			if want == OverlayAuto {
				mode = OverlayVXLAN
				if wgErr == nil {
					mode = OverlayWireGuard
				}
			}
			return store.SetOverlayMode(tx, mode)
		case want != OverlayAuto && want != mode:
			return fmt.Errorf("the cluster's gear overlay is %s: start this machine with --overlay %s (or auto)", mode, mode)
		case mode == OverlayWireGuard && wgErr != nil:
			return fmt.Errorf("the cluster's gear overlay is WireGuard, which this machine cannot make: %w (load the wireguard kernel module)", wgErr)
		}
		return nil
	})
	return mode, err
}
