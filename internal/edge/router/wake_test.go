package router

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// storeWaker wakes an app the way the autoscaler does: after a while, the
// app gets a running gear and loses its idle flag.
type storeWaker struct {
	st    *store.Store
	gear  func() store.Gear
	wakes atomic.Int64
}

func (w *storeWaker) Wake(appKey string) {
	if w.wakes.Add(1) > 1 {
		return
	}
	go func() {
		time.Sleep(200 * time.Millisecond) // the app's start
		w.st.Update(func(tx *store.Tx) error {
			var a store.App
			if err := tx.Get(appKey, &a); err != nil {
				return err
			}
			a.Idle = false
			tx.Put(appKey, &a)
			g := w.gear()
			return tx.Put(store.GearKey(g.ID), &g)
		})
	}()
}

// An idle app's first WebSocket and first TCP connection are held while
// it wakes, then served.
func TestWakeHoldsWebSocketAndTCP(t *testing.T) {
	for _, kind := range []string{"websocket", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			a := backend(t, "a", nil)
			echo := startEcho(t, "127.0.0.1:0", "echo")
			target := a
			if kind == "tcp" {
				target = echo.ln.Addr().String()
			}
			host, port, _ := net.SplitHostPort(target)
			var p int
			fmt.Sscan(port, &p)
			w := &storeWaker{gear: func() store.Gear {
				return store.Gear{ID: "g1", AppKey: blog.Key(), IP: host, Port: p, State: store.GearRunning}
			}}
			r, st := newRouterWith(t, func(o *Options) { o.Waker = w; o.WakeTimeout = 10 * time.Second })
			w.st = st
			idle := blog
			idle.Idle = true
			tcpPort := freePort(t)
			write(t, st, r, func(tx *store.Tx) error {
				tx.Put(idle.Key(), &idle)
				rt := store.TCPRoute{AppKey: blog.Key(), Port: tcpPort}
				return tx.Put(rt.Key(), &rt)
			})
			if kind == "tcp" {
				got, err := ask(fmt.Sprintf("127.0.0.1:%d", tcpPort), "wake up")
				if err != nil || got != "echo:wake up" {
					t.Fatalf("first TCP connection to an idle app: %q %v", got, err)
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				ws, _, err := websocket.Dial(ctx, "ws://blog-acme.localhost/ws", &websocket.DialOptions{HTTPClient: client(r)})
				if err != nil {
					t.Fatalf("first WebSocket to an idle app: %v", err)
				}
				defer ws.CloseNow()
				ws.Write(ctx, websocket.MessageText, []byte("hi"))
				if _, msg, err := ws.Read(ctx); err != nil || !strings.HasSuffix(string(msg), ":hi") {
					t.Fatalf("echo after wake: %q %v", msg, err)
				}
			}
			if n := w.wakes.Load(); n != 1 {
				t.Errorf("woken %d times; want once", n)
			}
		})
	}
}
