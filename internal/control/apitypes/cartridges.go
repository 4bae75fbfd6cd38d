package apitypes

// CartridgeView is an add-on service of an app, with how to reach it.
type CartridgeView struct {
	Name     string `json:"name"`
	URL      string `json:"url" doc:"connection URL with credentials, e.g. postgresql://USER:PASSWORD@HOST:PORT/DB"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Username string `json:"username,omitempty"`
	Password string `json:"password"`
	Database string `json:"database,omitempty"`
	Running  bool   `json:"running"`
}
