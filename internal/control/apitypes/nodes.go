package apitypes

import "time"

// NodeView is a machine of the platform.
type NodeView struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	Roles       []string  `json:"roles"`
	State       string    `json:"state" doc:"up, down (its presence lapsed), cordoned (up, takes no new gears)"`
	Gears       int       `json:"gears"`
	MemoryUsed  int64     `json:"memory_used" doc:"the gear sizes of its gears, in bytes"`
	MemoryTotal int64     `json:"memory_total"`
	Isolation   string    `json:"isolation"`
	Overlay     string    `json:"overlay" doc:"how its gears reach other machines' gears: none (one machine), vxlan or wireguard"`
	Version     string    `json:"version"`
	Joined      time.Time `json:"joined"`
	Started     time.Time `json:"started"`
}
