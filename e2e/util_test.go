package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func io_ReadAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func mustGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	code, body := get(t, c, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %q", url, code, body)
	}
	return body
}

func jsonDecode(t *testing.T, r io.Reader, v any) {
	t.Helper()
	if err := json.NewDecoder(r).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func hookLog(t *testing.T, data string) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(data, "apps", "*", "data", "hooks.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		return strings.Join(strings.Fields(string(b)), " ")
	}
	return ""
}

func adminToken(t *testing.T, cfg string) string {
	t.Helper()
	var c struct {
		Token string `json:"token"`
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &c)
	return c.Token
}

func splitPort(addr string) (string, string) {
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}

func execCommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
