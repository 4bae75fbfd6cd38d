//go:build race

package ssh

// raceEnabled: the race detector's sync.Pool drops a share of what it is
// given, so allocation counts say nothing.
const raceEnabled = true
