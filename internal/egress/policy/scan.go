package policy

import (
	"fmt"
	"time"
)

// ScanPolicy says when refused connections look like a port scan: at least
// Distinct different destinations (address and port) refused within
// Window. Retrying one destination counts once.
type ScanPolicy struct {
	Distinct int
	Window   time.Duration
}

// DefaultScan flags 20 distinct refused destinations within a minute.
var DefaultScan = ScanPolicy{Distinct: 20, Window: time.Minute}

// ScanDetector follows one app's refused destinations. It is a pure state
// machine: Observe is given the time and what was refused since the last
// call.
type ScanDetector struct {
	seen map[string]time.Time // destination -> last refusal
}

// Observe records refusals at now and reports whether the app crossed the
// policy's threshold, with how many distinct destinations it refused in
// the window.
func (d *ScanDetector) Observe(p ScanPolicy, now time.Time, refused []string) (bool, int) {
	if d.seen == nil {
		d.seen = map[string]time.Time{}
	}
	for _, dest := range refused {
		d.seen[dest] = now
	}
	n := 0
	for dest, t := range d.seen {
		if now.Sub(t) > p.Window {
			delete(d.seen, dest)
			continue
		}
		n++
	}
	return n >= p.Distinct, n
}

// Reset forgets everything (after an operator cleared the app).
func (d *ScanDetector) Reset() { d.seen = nil }

// Validate checks an operator's thresholds.
func (p ScanPolicy) Validate() error {
	if p.Distinct < 2 {
		return fmt.Errorf("port-scan threshold %d: use at least 2 distinct destinations", p.Distinct)
	}
	if p.Window < time.Second {
		return fmt.Errorf("port-scan window %s: use at least 1s", p.Window)
	}
	return nil
}

// Refusal is a destination an app's gears were refused, with how many
// packets were refused (the last 10 minutes, summed over its gears).
type Refusal struct {
	Dest    string `json:"destination"` // address:port
	Proto   string `json:"protocol"`
	Packets int64  `json:"packets"`
}
