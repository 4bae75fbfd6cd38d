// Command imageapp is the app of the image tests: a static binary that
// serves its user, a file it writes in its own root, and a WebSocket echo.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/coder/websocket"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "image app %s\n", os.Getenv("APP_VERSION"))
	})
	http.HandleFunc("/id", func(w http.ResponseWriter, r *http.Request) {
		m, _ := os.ReadFile("/proc/self/uid_map") // "inside outside count"
		f := append(strings.Fields(string(m)), "?", "?")
		fmt.Fprintf(w, "uid=%d hostuid=%s port=%s\n", os.Getuid(), f[1], os.Getenv("PORT"))
	})
	http.HandleFunc("/cat", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), 404)
			return
		}
		w.Write(b)
	})
	http.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile("/written.txt", []byte("ok"), 0o644); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		b, _ := os.ReadFile("/written.txt")
		fmt.Fprintf(w, "%s\n", b)
	})
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			c.Write(context.Background(), typ, msg)
		}
	})
	if err := http.ListenAndServe(":9000", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
