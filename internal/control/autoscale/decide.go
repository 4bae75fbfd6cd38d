// Package autoscale decides how many gears an app runs, from its live
// concurrency (requests in flight plus open WebSocket and TCP connections),
// sampled from the router once a second: up quickly when the load passes
// the target per gear (several gears at once if it jumped), down slowly and
// one gear at a time when it stays well below, never outside [min, max];
// and it idles apps without traffic to zero gears and wakes them on the
// next request, which the router holds meanwhile.
//
// Decide is a pure function of the samples and the app's settings; the
// Scaler component around it samples, acts through the agent and records
// events.
package autoscale

import (
	"fmt"
	"math"
	"time"
)

// Settings of one app's automatic scaling.
type Settings struct {
	Min, Max int
	// Target is the concurrency one gear should carry (default 16).
	Target int
}

// Policy holds the windows and delays of the decision.
type Policy struct {
	// Stable is the window whose average drives ordinary decisions.
	Stable time.Duration
	// Panic is the short window that catches a jump in load.
	Panic time.Duration
	// DownWindow is how long the load must fit in one gear fewer before
	// one is removed.
	DownWindow time.Duration
	// Cooldown follows any change before a scale-down.
	Cooldown time.Duration
	// Headroom: scale down only if the peak fits in current-1 gears at
	// this fraction of their target.
	Headroom float64
}

// DefaultPolicy suits interactive apps.
var DefaultPolicy = Policy{Stable: 10 * time.Second, Panic: 2 * time.Second, DownWindow: 30 * time.Second, Cooldown: 30 * time.Second, Headroom: 0.8}

// Input is what a decision sees.
type Input struct {
	// Samples are concurrency samples one Interval apart, oldest first.
	Samples  []float64
	Interval time.Duration
	Current  int
	Settings Settings
	// SinceChange is the time since the gear count last changed.
	SinceChange time.Duration
}

// Decision is the gear count wanted and why.
type Decision struct {
	Gears  int
	Reason string
}

// Decide returns how many gears the app should run.
func Decide(p Policy, in Input) Decision {
	s := in.Settings
	target := float64(s.Target)
	if target <= 0 {
		target = 16
	}
	clamp := func(n int) int { return max(s.Min, min(s.Max, n)) }
	cur := in.Current
	if cur < s.Min || cur > s.Max {
		return Decision{clamp(cur), fmt.Sprintf("keeping within min %d and max %d", s.Min, s.Max)}
	}
	if len(in.Samples) == 0 || in.Interval <= 0 {
		return Decision{cur, "no samples yet"}
	}
	stable := mean(tail(in.Samples, in.Interval, p.Stable))
	// A jump counts when the load stayed up for the whole short window:
	// its minimum, so that a one-second spike is only averaged in.
	panicAvg := minOf(tail(in.Samples, in.Interval, p.Panic))
	need := int(math.Ceil(math.Max(stable, panicAvg) / target))
	if need > cur {
		n := clamp(need)
		if n > cur {
			return Decision{n, fmt.Sprintf("concurrency %.1f (last %s) / %.1f (last %s) above %d per gear", panicAvg, p.Panic, stable, p.Stable, int(target))}
		}
		return Decision{cur, fmt.Sprintf("at max %d gears with concurrency %.1f", s.Max, math.Max(stable, panicAvg))}
	}
	if cur > max(s.Min, 1) && in.SinceChange >= p.Cooldown {
		window := tail(in.Samples, in.Interval, p.DownWindow)
		covered := time.Duration(len(window)) * in.Interval
		peak := maxOf(window)
		if covered >= p.DownWindow && peak <= float64(cur-1)*target*p.Headroom {
			return Decision{clamp(cur - 1), fmt.Sprintf("peak concurrency %.1f over %s fits in %d gears", peak, p.DownWindow, cur-1)}
		}
	}
	return Decision{cur, "within target"}
}

// tail returns the samples covering the last d.
func tail(s []float64, interval, d time.Duration) []float64 {
	n := int(d / interval)
	if n < 1 {
		n = 1
	}
	if n > len(s) {
		n = len(s)
	}
	return s[len(s)-n:]
}

func mean(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	t := 0.0
	for _, v := range s {
		t += v
	}
	return t / float64(len(s))
}

func minOf(s []float64) float64 {
	m := math.Inf(1)
	for _, v := range s {
		m = math.Min(m, v)
	}
	if math.IsInf(m, 1) {
		return 0
	}
	return m
}

func maxOf(s []float64) float64 {
	m := 0.0
	for _, v := range s {
		m = math.Max(m, v)
	}
	return m
}

// Validate checks settings a user asks for; limit is the machine's
// maximum gears per app.
func (s Settings) Validate(limit int) error {
	switch {
	case s.Min < 0 || s.Max < 0:
		return fmt.Errorf("gear counts cannot be negative (min %d, max %d)", s.Min, s.Max)
	case s.Min > s.Max:
		return fmt.Errorf("min %d is above max %d: choose min <= max", s.Min, s.Max)
	case s.Max > limit:
		return fmt.Errorf("max %d is above this platform's limit of %d gears per app", s.Max, limit)
	case s.Max == 0:
		return fmt.Errorf("max must be at least 1 (idle an app with `gantry app idle` instead)")
	case s.Target < 1:
		return fmt.Errorf("target connections per gear must be at least 1 (default 16)")
	}
	return nil
}
