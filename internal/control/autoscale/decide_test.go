package autoscale

import (
	"math/rand"
	"testing"
	"time"
)

// simulate runs Decide once a second over a load curve (concurrency per
// second), applying each decision at once, and returns the gear count
// after each second.
func simulate(load []float64, s Settings, start int) []int {
	var samples []float64
	cur, since := start, time.Hour
	var out []int
	for _, l := range load {
		samples = append(samples, l)
		if len(samples) > 120 {
			samples = samples[1:]
		}
		d := Decide(DefaultPolicy, Input{Samples: samples, Interval: time.Second, Current: cur, Settings: s, SinceChange: since})
		if d.Gears != cur {
			cur, since = d.Gears, 0
		}
		since += time.Second
		out = append(out, cur)
	}
	return out
}

func curve(n int, f func(i int) float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func changes(g []int) int {
	n := 0
	for i := 1; i < len(g); i++ {
		if g[i] != g[i-1] {
			n++
		}
	}
	return n
}

func firstAt(g []int, want int) int {
	for i, v := range g {
		if v >= want {
			return i
		}
	}
	return -1
}

var s13 = Settings{Min: 1, Max: 10, Target: 16}

func TestStepUpIsFastAndJumps(t *testing.T) {
	// 5 s idle-ish, then 100 concurrent for 60 s: 7 gears needed.
	g := simulate(curve(65, func(i int) float64 {
		if i < 5 {
			return 2
		}
		return 100
	}), s13, 1)
	if at := firstAt(g, 7); at < 0 || at > 5+2 {
		t.Errorf("reached 7 gears at second %d; want within 2 s of the step: %v", at, g)
	}
	if changes(g) > 2 {
		t.Errorf("%d changes on a step; want a jump, not a staircase: %v", changes(g), g)
	}
	if g[len(g)-1] != 7 {
		t.Errorf("settled at %d gears; want 7", g[len(g)-1])
	}
}

func TestLoadGoneScalesDownOneAtATimeToMin(t *testing.T) {
	g := simulate(curve(300, func(i int) float64 {
		if i < 40 {
			return 100
		}
		return 0
	}), s13, 1)
	peak := g[39]
	for i := 41; i < len(g); i++ {
		if g[i] < g[i-1]-1 {
			t.Fatalf("dropped %d gears at once at second %d: %v", g[i-1]-g[i], i, g)
		}
	}
	if g[68] != peak {
		t.Errorf("scaled down within 30 s of the load going away: %v", g[:80])
	}
	if g[len(g)-1] != 1 {
		t.Errorf("ended at %d gears; want min 1", g[len(g)-1])
	}
}

func TestSpikeDoesNotFlap(t *testing.T) {
	// One second of 200, otherwise 10.
	g := simulate(curve(200, func(i int) float64 {
		if i == 50 {
			return 200
		}
		return 10
	}), s13, 1)
	if changes(g) > 2 || maxInt(g) > 2 {
		t.Errorf("one spike: %d changes, up to %d gears; want at most one gear more, once: %v", changes(g), maxInt(g), g)
	}
	// It may react, but comes back to 1 and stays there.
	if g[len(g)-1] != 1 || changes(g[150:]) != 0 {
		t.Errorf("did not settle after the spike: %v", g[100:])
	}
}

func TestSlowRampTracksLoadMonotonically(t *testing.T) {
	// 0 to 128 over 120 s.
	g := simulate(curve(130, func(i int) float64 { return float64(min(i, 120)) * 128 / 120 }), s13, 1)
	for i := 1; i < len(g); i++ {
		if g[i] < g[i-1] {
			t.Fatalf("scaled down during a ramp up at second %d: %v", i, g)
		}
	}
	if g[len(g)-1] != 8 {
		t.Errorf("ended the ramp at %d gears; want 8 (128/16)", g[len(g)-1])
	}
}

func TestNoiseAroundTargetIsStable(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	// Around 40 (3 gears at 16), +-8.
	g := simulate(curve(600, func(int) float64 { return 40 + r.Float64()*16 - 8 }), s13, 1)
	if changes(g[60:]) > 2 {
		t.Errorf("%d changes under steady noisy load: %v", changes(g[60:]), g[60:])
	}
	if g[len(g)-1] < 3 || g[len(g)-1] > 4 {
		t.Errorf("settled at %d gears for ~40 concurrency; want 3 or 4", g[len(g)-1])
	}
}

func TestNeverLeavesBounds(t *testing.T) {
	s := Settings{Min: 2, Max: 4, Target: 16}
	r := rand.New(rand.NewSource(2))
	g := simulate(curve(600, func(int) float64 { return r.Float64() * 300 }), s, 1)
	for i, v := range g {
		if v < 2 || v > 4 {
			t.Fatalf("second %d: %d gears outside [2, 4]", i, v)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, s := range map[string]Settings{
		"min_above_max": {Min: 3, Max: 2, Target: 16},
		"negative":      {Min: -1, Max: 2, Target: 16},
		"over_limit":    {Min: 1, Max: 100, Target: 16},
		"target_zero":   {Min: 1, Max: 2, Target: 0},
		"max_zero":      {Min: 0, Max: 0, Target: 16},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Validate(16); err == nil {
				t.Error("accepted")
			}
		})
	}
	if err := (Settings{Min: 0, Max: 3, Target: 16}).Validate(16); err != nil {
		t.Errorf("min 0 refused: %v", err)
	}
}

func maxInt(g []int) int {
	m := 0
	for _, v := range g {
		m = max(m, v)
	}
	return m
}
