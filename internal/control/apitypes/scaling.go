package apitypes

import "time"

// ServiceView is something listening in a gear that can be forwarded.
type ServiceView struct {
	Name  string `json:"name" doc:"web, postgresql, redis… or tcp-PORT"`
	Gear  string `json:"gear"`
	IP    string `json:"ip" doc:"the gear's address; forwards connect to IP:PORT"`
	Port  int    `json:"port"`
	Local bool   `json:"local,omitempty" doc:"listens only on the gear's loopback"`
	// Cartridge marks an add-on service's gear (postgresql, redis).
	Cartridge bool `json:"cartridge,omitempty"`
}

// EventView is one event of an app: a scaling decision, idle or wake.
type EventView struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// StatsView is an app's recent traffic as this server's router saw it.
type StatsView struct {
	Every   string       `json:"every" doc:"time between samples"`
	Samples []StatSample `json:"samples" doc:"oldest first, the last hour"`
}

// StatSample is one point of an app's recent traffic.
type StatSample struct {
	Time        time.Time `json:"t"`
	RPS         float64   `json:"rps" doc:"requests per second"`
	P50         float64   `json:"p50_ms" doc:"median latency, milliseconds"`
	P99         float64   `json:"p99_ms" doc:"99th percentile latency, milliseconds"`
	Connections float64   `json:"connections"`
	Gears       int       `json:"gears" doc:"running web gears"`
}
