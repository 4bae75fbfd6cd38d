package apitypes

// EgressRouterView is how an app uses the egress router.
type EgressRouterView struct {
	Available bool                 `json:"available" doc:"false when gears are plain processes: there is no egress router"`
	Bound     bool                 `json:"bound" doc:"the app's gears may leave only through the egress router"`
	Address   string               `json:"address,omitempty" doc:"the router's address as the gears reach it (GANTRY_EGRESS_ROUTER)"`
	Proxy     *EgressProxyView     `json:"proxy,omitempty"`
	Redirects []EgressRedirectView `json:"redirects"`
	TCP       []EgressTCPView      `json:"tcp"`
}

// EgressProxyView is the app's HTTP proxy.
type EgressProxyView struct {
	URL string   `json:"url" doc:"given to the gears as HTTP_PROXY and HTTPS_PROXY"`
	ACL []string `json:"acl" doc:"allowed when an entry matches and no ! entry does"`
}

// EgressRedirectView is one redirect.
type EgressRedirectView struct {
	N      int    `json:"n"`
	Match  string `json:"match" doc:"what the gears' connections to are redirected"`
	Target string `json:"target"`
	Port   int    `json:"router_port" doc:"the router port it arrives on"`
}

// EgressTCPView is one TCP proxy.
type EgressTCPView struct {
	Port    int                   `json:"port"`
	Address string                `json:"address" doc:"where the gears connect"`
	Targets []EgressTCPTargetView `json:"targets"`
	Error   string                `json:"error,omitempty" doc:"why the router cannot listen on the port"`
}

// EgressTCPTargetView is a TCP proxy's destination.
type EgressTCPTargetView struct {
	Target  string `json:"target"`
	Healthy bool   `json:"healthy"`
}
