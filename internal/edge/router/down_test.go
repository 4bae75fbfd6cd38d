package router

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// TestRefusingGearLeavesTheRoute: a gear whose port refuses connections
// (its process crashed and waits to be restarted) costs no request: the
// request goes to another gear, the refusing one leaves the balancing,
// and it comes back once it listens again.
func TestRefusingGearLeavesTheRoute(t *testing.T) {
	r, st := newRouter(t)
	good := backend(t, "good", nil)
	// A port that refuses: a socket bound but not listening (the crashed
	// gear's port, held so that nobody else takes it meanwhile).
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	dead := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": good, "g2": dead})
	c := client(r)
	for i := 0; i < 40; i++ {
		code, body := fetch(t, c, "http://blog-acme.localhost/")
		if code != 200 || body != "good" {
			t.Fatalf("request %d: %d %q; want 200 good", i, code, body)
		}
	}
	if !r.isDown(dead) {
		t.Fatal("the refusing gear is not marked down")
	}
	// The gear listens again: it is back within a few probes.
	if err := syscall.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	ln2, err := net.FileListener(os.NewFile(uintptr(fd), "gear"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("back")) })}
	go srv.Serve(ln2)
	defer srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for r.isDown(dead) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.isDown(dead) {
		t.Fatal("the gear listens again but is still out of the route")
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		_, body := fetch(t, c, "http://blog-acme.localhost/")
		seen[body] = true
	}
	if !seen["back"] || !seen["good"] {
		t.Fatalf("answers after the gear came back: %v; want both gears", seen)
	}
}
