package builder

import (
	"encoding/json"
	"strings"
)

// HealthPath reads the web process's health check path from app.json, in
// the format Dokku uses:
//
//	{"healthchecks": {"web": [{"type": "startup", "path": "/health"}]}}
//
// It returns "" when the app declares none.
func HealthPath(dir string) string {
	t, err := openTree(dir)
	if err != nil {
		return ""
	}
	defer t.Close()
	data, err := t.readFile("app.json")
	if err != nil {
		return ""
	}
	var doc struct {
		Healthchecks map[string][]struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"healthchecks"`
	}
	if json.Unmarshal(data, &doc) != nil {
		return ""
	}
	for _, c := range doc.Healthchecks["web"] {
		if strings.HasPrefix(c.Path, "/") && (c.Type == "" || c.Type == "startup" || c.Type == "readiness") {
			return c.Path
		}
	}
	return ""
}
