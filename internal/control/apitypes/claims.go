package apitypes

import "time"

// ClaimView is a name claim as the API shows it.
type ClaimView struct {
	Name     string    `json:"name"`
	Owner    string    `json:"owner"`
	Method   string    `json:"method" doc:"dns (a TXT record was found) or admin (granted)"`
	Verified time.Time `json:"verified"`
}

// ClaimChallenge says what to publish to claim a name.
type ClaimChallenge struct {
	Name   string `json:"name"`
	Record string `json:"record" doc:"the TXT record's name"`
	Value  string `json:"value" doc:"the TXT record's value"`
}
