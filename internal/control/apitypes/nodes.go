package apitypes

import "time"

// NodeView is a machine of the platform.
type NodeView struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	Roles       []string  `json:"roles"`
	State       string    `json:"state" doc:"up, down (its presence lapsed), cordoned (up, takes no new gears)"`
	Leads       []string  `json:"leads" doc:"the roles it leads now: scheduler (moves the gears of lost machines), autoscaler"`
	Gears       int       `json:"gears"`
	MemoryUsed  int64     `json:"memory_used" doc:"the gear sizes of its gears, in bytes"`
	MemoryTotal int64     `json:"memory_total"`
	Isolation   string    `json:"isolation"`
	Overlay     string    `json:"overlay" doc:"how its gears reach other machines' gears: none (one machine), vxlan or wireguard"`
	GearBlock   string    `json:"gear_block,omitempty" doc:"its block of the gear subnet (namespaced gears in a cluster)"`
	Version     string    `json:"version"`
	Joined      time.Time `json:"joined"`
	Started     time.Time `json:"started"`
}

// JoinTokenRequest asks for a join token.
type JoinTokenRequest struct {
	TTL string `json:"ttl,omitempty" doc:"how long it lasts (Go duration, default 1h, at most 168h)"`
}

// JoinTokenView is a new join token, shown once.
type JoinTokenView struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Command string    `json:"command" doc:"what to run on the machine that joins"`
}

// JoinRequest is a machine asking to join the cluster.
type JoinRequest struct {
	Token   string `json:"token"`
	Name    string `json:"name" doc:"the machine's node name"`
	Address string `json:"address" doc:"the address the other machines reach it at"`
	PeerURL string `json:"peer_url,omitempty" doc:"its etcd peer URL, if it can hold a member"`
	// Isolation and GearSubnet must match the cluster's.
	Isolation  string `json:"isolation,omitempty" doc:"its isolation mode: process or namespaces"`
	GearSubnet string `json:"gear_subnet,omitempty" doc:"its gear subnet (namespaces)"`
}

// JoinGrant is what a machine that joined receives: the CA's cluster
// files and the platform key (paths relative to the data directory), and
// how to reach the store.
type JoinGrant struct {
	CloudDomain    string            `json:"cloud_domain"`
	Files          map[string][]byte `json:"files"`
	Member         bool              `json:"member" doc:"it runs an etcd member, started with initial_cluster"`
	InitialCluster string            `json:"initial_cluster,omitempty"`
	Endpoints      []string          `json:"endpoints"`
}

// DrainView is what a drain moved off a node and what stayed on it.
type DrainView struct {
	Node   string         `json:"node"`
	Moved  map[string]int `json:"moved" doc:"gears moved, by app"`
	Stayed []string       `json:"stayed" doc:"cartridges that stay with their data"`
}

// StoreMigrateRequest asks a machine that runs alone on SQLite to move
// its records into a new cluster's store (etcd), live.
type StoreMigrateRequest struct {
	Advertise string `json:"advertise" doc:"the address other machines will reach this one at"`
	NodeName  string `json:"node_name,omitempty" doc:"this machine's node name (default: its host name)"`
}

// StoreMigrateView is the outcome of a live move to etcd.
type StoreMigrateView struct {
	Store     string `json:"store" doc:"etcd"`
	Advertise string `json:"advertise"`
	JoinURL   string `json:"join_url" doc:"where other machines join (gantry node token makes their tokens)"`
}
