package apitypes

// EgressRuleView is one rule of an app's outbound policy.
type EgressRuleView struct {
	N          int    `json:"n" doc:"position, from 1 (first match wins)"`
	Action     string `json:"action"`
	Rule       string `json:"rule"`
	Meaning    string `json:"meaning" doc:"what the rule matches"`
	ShadowedBy int    `json:"shadowed_by,omitempty" doc:"an earlier rule that always decides first (this one never applies)"`
}

// EgressView is an app's outbound policy.
type EgressView struct {
	Rules    []EgressRuleView  `json:"rules"`
	Default  string            `json:"default" doc:"the platform's verdict when no rule matches"`
	Enforced bool              `json:"enforced" doc:"false when gears are plain processes: the policy is kept but not enforced"`
	Labels   map[string]string `json:"labels" doc:"port labels rules may use"`
	Blocked  bool              `json:"blocked" doc:"outbound traffic cut after a suspected port scan, until an operator clears it"`
	Refused  []EgressRefusal   `json:"refused" doc:"destinations refused in the last 10 minutes"`
	Failed   []EgressRefusal   `json:"failed" doc:"destinations that refused the connection themselves or were unreachable, in the last 10 minutes (port-scan detection counts them too)"`
	Router   *EgressRouterView `json:"router" doc:"the app's use of the egress router; a bound app leaves only through it and its rules do not apply to direct traffic"`
}

// EgressTestView says what the policy does with one destination.
type EgressTestView struct {
	Destination string   `json:"destination"`
	Addresses   []string `json:"addresses"`
	Allowed     bool     `json:"allowed"`
	Rule        int      `json:"rule" doc:"the deciding rule (0: the platform default)"`
	Reason      string   `json:"reason"`
}

// SecretsRotation is the answer of a platform key rotation.
type SecretsRotation struct {
	Resealed int    `json:"resealed" doc:"records whose secrets were sealed again with the new key"`
	KeyFile  string `json:"key_file" doc:"where the platform key lives (keep a copy apart from database backups)"`
}

// DoctorCheck is one finding of `gantry admin doctor` about the server's
// host.
type DoctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status" doc:"ok, warning or error"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty" doc:"what to change, when not ok"`
}

// EgressRefusal is one destination an app's gears were refused (or found
// unreachable), with the packets counted.
type EgressRefusal struct {
	Dest    string `json:"destination"` // address:port
	Proto   string `json:"protocol"`
	Packets int64  `json:"packets"`
}
