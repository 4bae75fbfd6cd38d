package apitypes

import "time"

// CertView describes an alias's certificate (never its key).
type CertView struct {
	Source   string    `json:"source" doc:"upload, acme (obtained automatically), or none"`
	Names    []string  `json:"names,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Forced   bool      `json:"forced,omitempty" doc:"accepted with --force although browsers will not trust it"`
	Warnings []string  `json:"warnings,omitempty"`
}

// AliasView is one custom hostname of an app.
type AliasView struct {
	Host          string   `json:"host"`
	URL           string   `json:"url"`
	Certificate   CertView `json:"certificate"`
	RedirectsFrom string   `json:"redirects_from,omitempty" doc:"the apex domain that redirects here (www. aliases)"`
}

// TCPRouteView is one raw TCP route of an app.
type TCPRouteView struct {
	ID         string `json:"id" doc:"port-N or sni-HOST, for removal"`
	Port       int    `json:"port,omitempty" doc:"platform port the route listens on"`
	SNI        string `json:"sni,omitempty" doc:"TLS passthrough: the server name on the HTTPS port"`
	TargetPort int    `json:"target_port" doc:"port in each gear; 0: the web port"`
	Address    string `json:"address" doc:"where clients connect"`
	Error      string `json:"error,omitempty" doc:"why the port is not served"`
}

// CAView is the platform root certificate.
type CAView struct {
	PEM         string    `json:"pem"`
	Subject     string    `json:"subject"`
	SHA256      string    `json:"sha256" doc:"fingerprint of the DER certificate"`
	NotAfter    time.Time `json:"not_after"`
	CloudDomain string    `json:"cloud_domain" doc:"the CA issues only for names under this domain"`
}
