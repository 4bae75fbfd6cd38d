package builder

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
)

var procNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// reservedProcs are the names Gantry gives its own gears of an app (what
// takes each), which a Procfile process may not use.
var reservedProcs = map[string]string{
	"run":  "one-off runs (gantry run)",
	"cron": "scheduled jobs (cron)",
}

// MaxProcfile is the largest Procfile read.
const MaxProcfile = 64 << 10

// Process is one line of a Procfile.
type Process struct {
	Name    string
	Command string
}

// ParseProcfile parses "name: command" lines. Blank lines and lines starting
// with # are ignored. It does not require a web process; callers that need
// one check with Web.
func ParseProcfile(data string) ([]Process, error) {
	if len(data) > MaxProcfile {
		return nil, fmt.Errorf("Procfile is %d bytes: keep it under %d", len(data), MaxProcfile)
	}
	var out []Process
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxProcfile)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(line, ":")
		name, cmd = strings.TrimSpace(name), strings.TrimSpace(cmd)
		switch {
		case !ok:
			return nil, fmt.Errorf("Procfile line %d: %q is not \"name: command\"", n, line)
		case !procNameRE.MatchString(name):
			return nil, fmt.Errorf("Procfile line %d: process name %q may use only letters, digits, _ and -", n, name)
		case cmd == "":
			return nil, fmt.Errorf("Procfile line %d: process %q has no command", n, name)
		case seen[name] > 0:
			return nil, fmt.Errorf("Procfile line %d: process %q is already defined on line %d", n, name, seen[name])
		case reservedProcs[strings.ToLower(name)] != "":
			return nil, fmt.Errorf("Procfile line %d: the process name %q is taken by %s: rename the process", n, name, reservedProcs[strings.ToLower(name)])
		case len(name) > 30:
			return nil, fmt.Errorf("Procfile line %d: process name %q is longer than 30 characters", n, name)
		}
		seen[name] = n
		out = append(out, Process{Name: name, Command: cmd})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading Procfile: %w", err)
	}
	return out, nil
}

// Web returns the command of the web process.
func Web(procs []Process) (string, error) {
	for _, p := range procs {
		if p.Name == "web" {
			return p.Command, nil
		}
	}
	var names []string
	for _, p := range procs {
		names = append(names, p.Name)
	}
	return "", fmt.Errorf("Procfile has no web: line (it has %s): add one such as \"web: node server.js\"; the web process must listen on $PORT", orNone(names))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no processes"
	}
	return strings.Join(s, ", ")
}
