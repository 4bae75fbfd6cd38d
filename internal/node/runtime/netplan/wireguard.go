package netplan

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The WireGuard overlay is routed like the VXLAN one, through a layer-3
// device: each other machine is a peer known by its public key, at its
// underlay address, allowed to send from its block only (WireGuard's
// cryptokey routing drops anything else), and its block is routed to the
// device. Traffic between machines is encrypted and authenticated.

// wireguardHeader is what WireGuard adds to an IPv4 packet.
const wireguardHeader = 60

// WireGuardAvailable says whether this kernel makes WireGuard devices
// (it makes one and removes it).
func WireGuardAvailable() error {
	name := "gwgprobe" + strconv.Itoa(os.Getpid()%100000)
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return fmt.Errorf("this kernel makes no WireGuard device: %w", err)
	}
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
	return nil
}

// NewWireGuardKey makes a private key (base64).
func NewWireGuardKey() (string, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", err
	}
	return k.String(), nil
}

// WireGuardPublic is the public key of a private one (both base64).
func WireGuardPublic(private string) (string, error) {
	k, err := wgtypes.ParseKey(private)
	if err != nil {
		return "", fmt.Errorf("the WireGuard key: %w", err)
	}
	return k.PublicKey().String(), nil
}

// wireguardConfig is the device's configuration for the plan: this
// machine's key and port, and each other machine as a peer.
func wireguardConfig(p Plan) (wgtypes.Config, error) {
	o := p.Overlay
	key, err := wgtypes.ParseKey(o.PrivateKey)
	if err != nil {
		return wgtypes.Config{}, fmt.Errorf("this machine's WireGuard key: %w", err)
	}
	port := int(o.Port)
	cfg := wgtypes.Config{PrivateKey: &key, ListenPort: &port, ReplacePeers: true}
	keepalive := 25 * time.Second
	for _, peer := range o.Peers {
		pub, err := wgtypes.ParseKey(peer.PublicKey)
		if err != nil {
			return cfg, fmt.Errorf("machine %s has no valid WireGuard key: %w", peer.Name, err)
		}
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{
			PublicKey:                   pub,
			Endpoint:                    &net.UDPAddr{IP: net.IP(peer.Underlay.AsSlice()), Port: port},
			AllowedIPs:                  []net.IPNet{*ipnet(peer.Block.Masked().Addr(), peer.Block.Bits())},
			ReplaceAllowedIPs:           true,
			PersistentKeepaliveInterval: &keepalive,
		})
	}
	return cfg, nil
}

// ensureWireGuard makes the WireGuard device, configures its peers and
// routes the other machines' blocks to it.
func ensureWireGuard(p Plan, changed func(string, ...any)) error {
	name := p.WireGuard()
	cfg, err := wireguardConfig(p)
	if err != nil {
		return err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		mtu := 1500
		if under := linkOf(p.Overlay.Local); under != nil {
			mtu = under.Attrs().MTU
		}
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu - wireguardHeader}}); err != nil {
			return fmt.Errorf("creating the WireGuard overlay %s: %w (start the server with --overlay vxlan where the kernel lacks WireGuard)", name, err)
		}
		changed("created overlay %s (WireGuard, port %d)", name, p.Overlay.Port)
		if l, err = netlink.LinkByName(name); err != nil {
			return err
		}
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("configuring %s: %w", name, err)
	}
	defer c.Close()
	if err := c.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("configuring %s: %w", name, err)
	}
	if err := ensureOverlayAddr(p, l, changed); err != nil {
		return err
	}
	want := map[string]bool{}
	var errs []error
	for _, peer := range p.Overlay.Peers {
		dst := ipnet(peer.Block.Masked().Addr(), peer.Block.Bits())
		want[dst.String()] = true
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK,
			Src: net.IP(VTEP(p.Block).AsSlice())}); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: route to %s: %w", peer.Name, peer.Block, err))
		}
	}
	routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && !want[r.Dst.String()] {
			if ones, _ := r.Dst.Mask.Size(); ones < 32 {
				netlink.RouteDel(&r)
				changed("removed route to %s", r.Dst)
			}
		}
	}
	return errors.Join(errs...)
}

// wireguardPeers is what the kernel's device has, for tests and dumps:
// each peer's public key with its endpoint and allowed addresses.
func wireguardPeers(name string) (map[string]string, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	d, err := c.Device(name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, peer := range d.Peers {
		var allowed []string
		for _, a := range peer.AllowedIPs {
			allowed = append(allowed, a.String())
		}
		ep := ""
		if peer.Endpoint != nil {
			ep = peer.Endpoint.String()
		}
		out[peer.PublicKey.String()] = fmt.Sprint(ep, " ", allowed)
	}
	return out, nil
}
