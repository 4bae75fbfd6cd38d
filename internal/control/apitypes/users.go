package apitypes

import "time"

// UserView is a user as the API shows it.
type UserView struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Created time.Time `json:"created"`
}

// NewUserView is a created user with the only copy of their token.
type NewUserView struct {
	UserView
	Token string `json:"token" doc:"API token; shown once, stored only hashed"`
}

// InfoView describes the platform to clients.
type InfoView struct {
	Version     string   `json:"version"`
	CloudDomain string   `json:"cloud_domain"`
	User        UserView `json:"user"`
	SSHHostKeys []string `json:"ssh_host_keys" doc:"known_hosts lines for the SSH endpoint"`
}

// SSHKeyView is a public key as the API shows it.
type SSHKeyView struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Type        string    `json:"type"`
	Created     time.Time `json:"created"`
}
