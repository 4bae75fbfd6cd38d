// Package staticsite serves a static app's files in its gear: the web
// process of the static cartridge (`gantry static-serve`), listening on
// $IP:$PORT and serving the current directory.
package staticsite

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Main serves the working directory until the process is stopped.
func Main() int {
	dir, _ := os.Getwd()
	addr := net.JoinHostPort(os.Getenv("IP"), os.Getenv("PORT"))
	fs := http.FileServer(http.Dir(dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Never serve the platform's or git's own files.
		if strings.HasPrefix(r.URL.Path, "/.") || strings.Contains(r.URL.Path, "/.") {
			http.NotFound(w, r)
			return
		}
		fs.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 30 * time.Second}
	fmt.Printf("serving %s on %s\n", dir, addr)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
