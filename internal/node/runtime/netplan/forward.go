package netplan

import (
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Beside Docker (or ufw), the iptables FORWARD chain's policy is DROP. In
// netfilter a packet dropped by any table's base chain is dropped, whatever
// Gantry's own table says, so the gears' routed traffic (gear to the
// outside, and bridged gear to gear when br_netfilter is on) needs an
// accept in those chains too: in DOCKER-USER when Docker's chains exist
// (the place Docker keeps for its users' rules), else at the top of
// FORWARD. Nothing is added on a host whose FORWARD accepts.

// forwardRules are the accepts for the bridge, marked with the prefix.
func forwardRules(p Plan) [][]string {
	mark := []string{"-m", "comment", "--comment", "gantry:" + p.Prefix}
	return [][]string{
		append([]string{"-i", p.Bridge}, append(mark, "-j", "ACCEPT")...),
		append([]string{"-o", p.Bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"}, append(mark, "-j", "ACCEPT")...),
	}
}

// forwardChain is where the accepts go on this host ("" for nowhere:
// no iptables, or a FORWARD that accepts).
func forwardChain() (ipt, chain string) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return "", ""
	}
	if exec.Command(ipt, "-w", "-S", "DOCKER-USER").Run() == nil {
		return ipt, "DOCKER-USER"
	}
	out, err := exec.Command(ipt, "-w", "-S", "FORWARD").Output()
	if err != nil || !strings.Contains(string(out), "-P FORWARD DROP") {
		return ipt, ""
	}
	return ipt, "FORWARD"
}

// forwardChecked is when each prefix's FORWARD was last looked at: the
// look costs two iptables runs, too much for every gear start, and Docker
// installed meanwhile is seen within forwardRecheck.
var forwardChecked sync.Map // prefix -> time.Time

const forwardRecheck = 30 * time.Second

// ensureForwardAccept adds the bridge's accepts where the host's FORWARD
// would drop them (looking again at most every forwardRecheck unless
// force).
func ensureForwardAccept(p Plan, changed func(string, ...any), force bool) error {
	if t, ok := forwardChecked.Load(p.Prefix); ok && !force && time.Since(t.(time.Time)) < forwardRecheck {
		return nil
	}
	forwardChecked.Store(p.Prefix, time.Now())
	ipt, chain := forwardChain()
	if chain == "" {
		return nil
	}
	for i, r := range forwardRules(p) {
		if exec.Command(ipt, append([]string{"-w", "-C", chain}, r...)...).Run() == nil {
			continue
		}
		args := append([]string{"-w", "-I", chain, itoa(i + 1)}, r...)
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			return &ForwardError{Chain: chain, Out: strings.TrimSpace(string(out)), Rule: strings.Join(r, " ")}
		}
		changed("accepted %s traffic in iptables %s", p.Bridge, chain)
	}
	return nil
}

// removeForwardAccept takes the bridge's accepts out of both chains.
func removeForwardAccept(p Plan) {
	forwardChecked.Delete(p.Prefix)
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return
	}
	for _, chain := range []string{"DOCKER-USER", "FORWARD"} {
		for _, r := range forwardRules(p) {
			for exec.Command(ipt, append([]string{"-w", "-D", chain}, r...)...).Run() == nil {
			}
		}
	}
}

// ForwardError says which rule could not be added, for the operator to add
// it by hand.
type ForwardError struct{ Chain, Rule, Out string }

func (e *ForwardError) Error() string {
	return "the host's iptables " + e.Chain + " chain drops forwarded traffic and Gantry could not add its accept (" + e.Out +
		"): add it yourself: iptables -I " + e.Chain + " 1 " + e.Rule
}

func itoa(i int) string { return strconv.Itoa(i) }
