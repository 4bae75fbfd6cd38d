package router

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// running counts the tunnel halves that hold a goroutine.
func running() int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return bytes.Count(b.Bytes(), []byte("router.(*half).run("))
}

// Idle WebSockets hold no goroutine: their halves are parked in the
// shared poller, and a message wakes them.
func TestIdleTunnelsParked(t *testing.T) {
	r, st := newRouter(t)
	a := backend(t, "a", nil)
	put(t, st, r, []store.App{blog}, map[string]string{"g1": a})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 100
	var wss []*websocket.Conn
	for range n {
		ws, _, err := websocket.Dial(ctx, "ws://blog-acme.localhost/ws", &websocket.DialOptions{HTTPClient: client(r)})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		wss = append(wss, ws)
	}
	echoAll := func(round int) {
		t.Helper()
		for i, ws := range wss {
			msg := fmt.Sprint(round, "-", i)
			if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatalf("write %s: %v", msg, err)
			}
			if _, got, err := ws.Read(ctx); err != nil || string(got) != "a:"+msg {
				t.Fatalf("echo %s: %q %v", msg, got, err)
			}
		}
	}
	for round := range 3 {
		echoAll(round)
		eventually(t, "idle tunnels parked", func() bool { return running() < n/10 })
	}
	// Clients leaving wake the parked halves, which end their tunnels.
	for _, ws := range wss {
		ws.CloseNow()
	}
	eventually(t, "tunnels ended", func() bool { return r.statsOf(blog.Key(), "").active.Load() == 0 && running() == 0 })
}
