// Command portforward measures `gantry port-forward` beside OpenSSH in one
// run: the throughput of a 1 GiB download from a service in a gear, and
// connections per second, over Gantry's SSH path, its WebSocket path
// (--via https), the OpenSSH client against Gantry's endpoint, and OpenSSH
// end to end (sshd + ssh -L) to the same target, with a direct connection
// as the ceiling.
//
//	go run ./bench/portforward [-size 1024] [-conns 300] [-rounds 3] [-isolation process] [-only ssh,openssh]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

// The target: a second service of the app that sends as many bytes as the
// client asks for in its first line (0: a tiny reply, for connection rate).
const app = `const http = require("http"), net = require("net");
http.createServer((q, s) => s.end("ok\n")).listen(process.env.PORT, process.env.IP);
const chunk = Buffer.alloc(1 << 16, 120);
net.createServer((s) => {
  s.once("data", (d) => {
    let left = parseInt(d.toString(), 10) || 0;
    if (left === 0) return s.end("pong\n");
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once("drain", pump);
      }
      s.end();
    };
    pump();
  });
  s.on("error", () => {});
}).listen(7070, process.env.IP);
`

func main() {
	size := flag.Int("size", 1024, "MiB to transfer")
	conns := flag.Int("conns", 300, "connections for the connection rate")
	isolation := flag.String("isolation", "process", "gear isolation: process, namespaces or auto")
	nRounds := flag.Int("rounds", 3, "interleaved rounds; figures are their medians")
	flag.StringVar(&only, "only", "", "measure only these paths (comma-separated: direct, ssh, https, openssh-client, openssh); for profiling one")
	flag.Parse()
	if err := run(int64(*size)<<20, *conns, *isolation, *nRounds); err != nil {
		fmt.Fprintln(os.Stderr, "portforward:", err)
		os.Exit(1)
	}
}

// only lists the paths to measure; empty: all.
var only string

func measured(path string) bool {
	return only == "" || strings.Contains(","+only+",", ","+path+",")
}

func run(size int64, conns int, isolation string, rounds int) error {
	e, err := benchenv.Start("--isolation", isolation)
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.CreateApp("web", app); err != nil {
		return err
	}
	// The target's address, as the platform lists it.
	svcOut, err := e.Gantry("app", "show", "web", "--json")
	if err != nil {
		return err
	}
	var shown struct {
		Gears []struct {
			IP string `json:"ip"`
		} `json:"gears"`
	}
	json.Unmarshal([]byte(svcOut), &shown)
	if len(shown.Gears) == 0 {
		return fmt.Errorf("no gear")
	}
	target := net.JoinHostPort(shown.Gears[0].IP, "7070")
	paths := []struct{ name, addr string }{}
	if measured("direct") {
		paths = append(paths, struct{ name, addr string }{"direct (no tunnel)", target})
	}
	stop := []func(){}
	defer func() {
		for _, f := range stop {
			f()
		}
	}()
	for _, via := range []string{"ssh", "https"} {
		if !measured(via) {
			continue
		}
		addr, kill, err := gantryForward(e, via)
		if err != nil {
			return err
		}
		stop = append(stop, kill)
		paths = append(paths, struct{ name, addr string }{"gantry port-forward --via " + via, addr})
	}
	gantrySSH := strings.Split(mustGitURL(e), "@")[1]
	host, rest, _ := strings.Cut(gantrySSH, ":")
	port, _, _ := strings.Cut(rest, "/")
	if measured("openssh-client") {
		if addr, kill, err := sshL(e, host, port, "git", target); err == nil {
			stop = append(stop, kill)
			paths = append(paths, struct{ name, addr string }{"OpenSSH ssh -L to Gantry's sshd", addr})
		} else {
			fmt.Printf("  (OpenSSH client to Gantry: %v)\n", err)
		}
	}
	if measured("openssh") {
		if addr, kill, err := openSSH(e, target); err == nil {
			stop = append(stop, kill)
			paths = append(paths, struct{ name, addr string }{"OpenSSH sshd + ssh -L", addr})
		} else {
			fmt.Printf("  (OpenSSH end to end not measured: %v)\n", err)
		}
	}

	fmt.Printf("port-forward, %d MiB download and %d connections, isolation %s, medians of %d interleaved rounds\n\n", size>>20, conns, isolation, rounds)
	fmt.Printf("  %-34s %12s %14s\n", "path", "MiB/s", "connections/s")
	mbs := make([][]float64, len(paths))
	cps := make([][]float64, len(paths))
	for round := 0; round < rounds; round++ {
		for i, p := range paths {
			m, err := throughput(p.addr, size)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			c, err := connRate(p.addr, conns)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			mbs[i], cps[i] = append(mbs[i], m), append(cps[i], c)
			fmt.Fprintf(os.Stderr, "round %d: %s %.0f MiB/s %.0f conn/s\n", round+1, p.name, m, c)
		}
	}
	median := func(vs []float64) float64 {
		vs = append([]float64(nil), vs...)
		sort.Float64s(vs)
		return vs[len(vs)/2]
	}
	baseIdx := -1
	for i, p := range paths {
		if strings.HasPrefix(p.name, "OpenSSH sshd") {
			baseIdx = i
		}
		fmt.Printf("  %-34s %12.0f %14.0f\n", p.name, median(mbs[i]), median(cps[i]))
	}
	if baseIdx >= 0 {
		// Each round's ratio to OpenSSH end to end in that round, so that
		// the machine's drift between rounds cancels out.
		fmt.Printf("\n  throughput relative to OpenSSH end to end, per round (aim: Gantry's SSH path >= 1.2 in every round):\n")
		fmt.Printf("    %-34s %8s %8s %8s\n", "", "median", "min", "max")
		for i, p := range paths {
			if i == baseIdx || strings.HasPrefix(p.name, "direct") {
				continue
			}
			var rs []float64
			for r := range mbs[i] {
				rs = append(rs, mbs[i][r]/mbs[baseIdx][r])
			}
			sort.Float64s(rs)
			fmt.Printf("    %-34s %8.2f %8.2f %8.2f\n", p.name, median(rs), rs[0], rs[len(rs)-1])
		}
	}
	return nil
}

func mustGitURL(e *benchenv.Env) string {
	out, _ := e.Gantry("app", "show", "web", "--json")
	var a struct {
		GitURL string `json:"git_url"`
	}
	json.Unmarshal([]byte(out), &a)
	return strings.TrimPrefix(a.GitURL, "ssh://")
}

// gantryForward starts `gantry port-forward web --service tcp-7070`.
func gantryForward(e *benchenv.Env, via string) (string, func(), error) {
	cmd := exec.Command(e.Bin, "port-forward", "web", "--service", "tcp-7070", "--via", via, "--json")
	cmd.Env = envOf(e)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	var fwd []struct {
		Local string `json:"local"`
	}
	if err := json.NewDecoder(out).Decode(&fwd); err != nil || len(fwd) == 0 {
		cmd.Process.Kill()
		return "", nil, fmt.Errorf("port-forward --via %s: %v", via, err)
	}
	stop := func() { // Ctrl-C, as a user would (a CPU profile gets written)
		cmd.Process.Signal(os.Interrupt)
		t := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		t.Stop()
	}
	return fwd[0].Local, stop, nil
}

func envOf(e *benchenv.Env) []string {
	return append(os.Environ(), "HOME="+e.Home, "GANTRY_CONFIG="+filepath.Join(e.Root, "cfg.json"))
}

// sshL runs OpenSSH's client with -L against an SSH server.
func sshL(e *benchenv.Env, host, port, user, target string) (string, func(), error) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	local := l.Addr().String()
	l.Close()
	cmd := exec.Command("ssh", "-N", "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", e.Home+"/.ssh/id_ed25519",
		"-p", port, "-L", local+":"+target, user+"@"+host)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	kill := func() { cmd.Process.Kill(); cmd.Wait() }
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", local); err == nil {
			c.Close()
			return local, kill, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	kill()
	return "", nil, fmt.Errorf("ssh -L did not come up")
}

// openSSH starts the system sshd on a free port with the bench user's key,
// and ssh -L through it.
func openSSH(e *benchenv.Env, target string) (string, func(), error) {
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		return "", nil, fmt.Errorf("sshd is not installed")
	}
	if os.Geteuid() != 0 {
		return "", nil, fmt.Errorf("needs root to run sshd")
	}
	dir := filepath.Join(e.Root, "sshd")
	os.MkdirAll(dir, 0o700)
	os.MkdirAll("/run/sshd", 0o755)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir+"/host").CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("%v %s", err, out)
	}
	pub, _ := os.ReadFile(e.Home + "/.ssh/id_ed25519.pub")
	os.WriteFile(dir+"/authorized_keys", pub, 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cfg := strings.Join([]string{"Port " + port, "ListenAddress 127.0.0.1", "HostKey " + dir + "/host",
		"AuthorizedKeysFile " + dir + "/authorized_keys", "PermitRootLogin prohibit-password", "StrictModes no",
		"PasswordAuthentication no", "UsePAM no", "AllowTcpForwarding yes", "PidFile " + dir + "/pid"}, "\n")
	os.WriteFile(dir+"/config", []byte(cfg+"\n"), 0o600)
	sshd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", dir+"/config")
	stderr, _ := sshd.StderrPipe()
	if err := sshd.Start(); err != nil {
		return "", nil, err
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	for i := 0; i < 50; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	local, kill, err := sshL(e, "127.0.0.1", port, "root", target)
	if err != nil {
		sshd.Process.Kill()
		return "", nil, err
	}
	return local, func() { kill(); sshd.Process.Kill(); sshd.Wait() }, nil
}

func throughput(addr string, size int64) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	t0 := time.Now()
	fmt.Fprintf(c, "%d\n", size)
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("got %d of %d bytes", n, size)
	}
	return float64(n) / (1 << 20) / time.Since(t0).Seconds(), nil
}

func connRate(addr string, n int) (float64, error) {
	t0 := time.Now()
	buf := make([]byte, 16)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		io.WriteString(c, "0\n")
		if _, err := io.ReadFull(c, buf[:5]); err != nil {
			c.Close()
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
		c.Close()
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
