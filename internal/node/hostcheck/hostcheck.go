// Package hostcheck looks at the host Gantry runs on and says, for each
// thing it depends on, ok, warning or error, with the fix: kernel
// features, the cgroup mode and controllers, runc and nft, IP forwarding,
// bridge netfilter, the iptables FORWARD policy (Docker, ufw), firewall
// managers, DNS for gears, the router's and SSH ports, disk space. `gantry
// admin doctor` prints it; the server logs a one-line summary at start.
//
// It must not change the host.
package hostcheck

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/gantry-paas/gantry/internal/node/runtime/cgroup"
)

// Statuses.
const (
	OK      = "ok"
	Warning = "warning"
	Error   = "error"
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status" doc:"ok, warning or error"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty" doc:"what to change, when not ok"`
}

// Options say what the server runs with.
type Options struct {
	DataDir    string
	Namespaced bool           // full isolation asked for
	Bridge     string         // the gear bridge (namespaced)
	DNS        netip.AddrPort // the DNS forwarder gears use (namespaced)
	ResolvConf string
	// Ports the server serves, name to address ("http", ":80"...).
	Ports map[string]string
	// Quick leaves out what asks the network (the DNS query): for the
	// summary at start, when the forwarder may not listen yet.
	Quick bool
}

// Run makes every check.
func Run(o Options) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }
	if o.Namespaced {
		add(Check{"isolation", OK, "full (namespaces, cgroups, nftables)", ""})
	} else {
		add(Check{"isolation", Warning, "none: gears are plain processes", "run the server as root on Linux with runc and nftables (--isolation namespaces)"})
	}
	add(kernel())
	add(cgroups())
	add(tool("runc", "--version", o.Namespaced, "apt-get install runc (or run scripts/install-deps)"))
	add(tool("nft", "--version", o.Namespaced, "apt-get install nftables"))
	add(forwarding(o))
	add(bridgeNetfilter())
	add(forwardPolicy(o))
	add(firewalls())
	add(dns(o))
	for _, name := range []string{"http", "https", "ssh"} {
		if addr, ok := o.Ports[name]; ok {
			add(port(name, addr))
		}
	}
	add(diskSpace(o.DataDir))
	return out
}

// Summary is the one line the server logs at start.
func Summary(checks []Check) string {
	var parts []string
	worst := OK
	for _, c := range checks {
		switch c.Name {
		case "isolation", "cgroups", "firewalls", "dns", "forward-policy":
			parts = append(parts, c.Name+"="+c.Detail)
		}
		if c.Status == Error || c.Status == Warning && worst == OK {
			worst = c.Status
		}
	}
	return fmt.Sprintf("host: %s; %s (gantry admin doctor for every check)", strings.Join(parts, "; "), worst)
}

func kernel() Check {
	var missing []string
	for _, ns := range []string{"net", "pid", "mnt", "ipc", "uts"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			missing = append(missing, ns+" namespaces")
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "loop devices (disk limits)")
	}
	if len(missing) > 0 {
		return Check{"kernel", Warning, "missing: " + strings.Join(missing, ", "), "use a kernel with namespaces and the loop module (modprobe loop)"}
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	return Check{"kernel", OK, "namespaces, loop devices; " + cstr(u.Release[:]), ""}
}

func cgroups() Check {
	mode := cgroup.Mode()
	var missing []string
	if mode == "v2" {
		b, _ := os.ReadFile(cgroup.Root + "/cgroup.controllers")
		have := map[string]bool{}
		for _, f := range strings.Fields(string(b)) {
			have[f] = true
		}
		for _, c := range []string{"memory", "pids", "cpu"} {
			if !have[c] {
				missing = append(missing, c)
			}
		}
	} else {
		for _, c := range []string{"memory", "pids", "cpu"} {
			if _, err := os.Stat(cgroup.Root + "/" + c); err != nil {
				missing = append(missing, c)
			}
		}
	}
	if len(missing) > 0 {
		return Check{"cgroups", Error, mode + " without " + strings.Join(missing, ", "), "enable the controllers (v2: the kernel command line, e.g. cgroup_enable=memory; v1: mount them)"}
	}
	return Check{"cgroups", OK, mode + " (memory, pids, cpu)", ""}
}

func tool(name, arg string, needed bool, fix string) Check {
	out, err := exec.Command(name, arg).Output()
	if err != nil {
		st := Warning
		if needed {
			st = Error
		}
		return Check{name, st, name + " is not installed", fix}
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return Check{name, OK, line, ""}
}

func forwarding(o Options) Check {
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if strings.TrimSpace(string(b)) == "1" {
		return Check{"ip-forward", OK, "on", ""}
	}
	st := Warning
	if o.Namespaced {
		st = Error
	}
	return Check{"ip-forward", st, "off: gears cannot reach the outside", "sysctl -w net.ipv4.ip_forward=1 (Gantry sets it when it runs namespaced gears)"}
}

func bridgeNetfilter() Check {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err != nil {
		return Check{"bridge-netfilter", OK, "off (module not loaded): apps are kept apart by the bridge table either way", ""}
	}
	return Check{"bridge-netfilter", OK, "bridge-nf-call-iptables=" + strings.TrimSpace(string(b)) + ": apps are kept apart by the bridge table either way", ""}
}

// forwardPolicy finds a FORWARD that drops without Gantry's accept.
func forwardPolicy(o Options) Check {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return Check{"forward-policy", OK, "no iptables", ""}
	}
	fwd, err := exec.Command(ipt, "-w", "-S", "FORWARD").Output()
	if err != nil {
		return Check{"forward-policy", OK, "no iptables filter table", ""}
	}
	docker, _ := exec.Command(ipt, "-w", "-S", "DOCKER-USER").Output()
	drops := strings.Contains(string(fwd), "-P FORWARD DROP")
	if !drops {
		return Check{"forward-policy", OK, "FORWARD accepts", ""}
	}
	chain := "FORWARD"
	if len(docker) > 0 {
		chain = "DOCKER-USER"
	}
	bridge := o.Bridge
	if bridge == "" {
		bridge = "gantry0"
	}
	if strings.Contains(string(fwd)+string(docker), "-i "+bridge+" ") {
		return Check{"forward-policy", OK, "FORWARD drops; the gear bridge's accept is in " + chain, ""}
	}
	return Check{"forward-policy", Error, "FORWARD drops (Docker or ufw) and nothing accepts the gear bridge " + bridge + " in " + chain + ": gears cannot reach the outside",
		fmt.Sprintf("iptables -I %s 1 -i %s -j ACCEPT && iptables -I %s 2 -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT (a namespaced Gantry adds these itself)", chain, bridge, chain, bridge)}
}

func firewalls() Check {
	var found []string
	if _, err := os.Stat("/var/run/docker.sock"); err == nil {
		found = append(found, "docker")
	} else if ipt, err := exec.LookPath("iptables"); err == nil && exec.Command(ipt, "-w", "-S", "DOCKER-USER").Run() == nil {
		found = append(found, "docker (its chains)")
	}
	if b, err := os.ReadFile("/etc/ufw/ufw.conf"); err == nil && strings.Contains(string(b), "ENABLED=yes") {
		found = append(found, "ufw")
	}
	if _, err := os.Stat("/var/run/firewalld"); err == nil {
		found = append(found, "firewalld")
	}
	if len(found) == 0 {
		return Check{"firewalls", OK, "none", ""}
	}
	return Check{"firewalls", Warning, strings.Join(found, ", "),
		"allow the router's and SSH ports (ufw allow 80,443,2222/tcp; firewall-cmd --add-service=http --add-service=https --add-port=2222/tcp --permanent) and, under firewalld, put the gear bridge in the trusted zone (firewall-cmd --zone=trusted --add-interface=BRIDGE --permanent)"}
}

// dns asks the forwarder the gears use for a name: any answer proves it
// reaches a resolver.
func dns(o Options) Check {
	if o.Quick && o.DNS.IsValid() {
		return Check{"dns", OK, "gears resolve through " + o.DNS.String() + " (upstreams from " + o.ResolvConf + ")", ""}
	}
	if !o.DNS.IsValid() {
		conf, _ := os.ReadFile(o.ResolvConf)
		if !strings.Contains(string(conf), "nameserver") {
			return Check{"dns", Error, "no nameserver in " + o.ResolvConf, "give the host a resolver, or --resolv-conf FILE"}
		}
		return Check{"dns", OK, "gears use " + o.ResolvConf, ""}
	}
	name := dnsmessage.MustNewName("example.com.")
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	pkt, _ := q.Pack()
	c, err := net.DialTimeout("udp", o.DNS.String(), 2*time.Second)
	if err != nil {
		return Check{"dns", Error, "the forwarder " + o.DNS.String() + " cannot be reached: " + err.Error(), "look at the server log for the DNS forwarder"}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(pkt)
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	var m dnsmessage.Message
	if err != nil || m.Unpack(buf[:n]) != nil || m.Header.RCode == dnsmessage.RCodeServerFailure {
		return Check{"dns", Error, "the forwarder " + o.DNS.String() + " gets no answer from its upstreams (" + o.ResolvConf + ")", "check the nameservers of " + o.ResolvConf + " (a loopback stub such as 127.0.0.53 works), or give --egress-dns-upstream HOST:PORT"}
	}
	return Check{"dns", OK, "gears resolve through " + o.DNS.String() + " (upstreams from " + o.ResolvConf + ")", ""}
}

func port(name, addr string) Check {
	return Check{"port-" + name, OK, "served by this server on " + addr, ""}
}

func diskSpace(dir string) Check {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Check{"disk", Warning, err.Error(), ""}
	}
	free := int64(st.Bavail) * st.Bsize
	total := int64(st.Blocks) * st.Bsize
	d := fmt.Sprintf("%d GiB free of %d GiB in %s", free>>30, total>>30, dir)
	if free < 2<<30 || total > 0 && free*10 < total {
		return Check{"disk", Warning, d, "free space where the data directory is (apps' disks, deployments, logs), or move it with --data"}
	}
	return Check{"disk", OK, d, ""}
}

func cstr(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}
