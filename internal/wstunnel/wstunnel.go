// Package wstunnel carries one TCP connection over a WebSocket, for
// `gantry port-forward --via https` where only HTTPS reaches the platform.
// Bytes travel as binary messages; a text message "eof" says the sender
// shut down its write side (TCP half-close has no WebSocket equivalent).
// Both the API (server side) and the CLI (client side) use Relay.
package wstunnel

import (
	"context"
	"io"
	"net"
	"sync"

	"github.com/coder/websocket"
)

const eof = "eof"

var bufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Relay copies between ws and conn until both directions are done, passing
// half-closes through.
func Relay(ctx context.Context, ws *websocket.Conn, conn net.Conn) {
	ws.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // ws -> conn
		defer wg.Done()
		for {
			typ, r, err := ws.Reader(ctx)
			if err != nil {
				conn.Close()
				return
			}
			if typ == websocket.MessageText {
				b, _ := io.ReadAll(io.LimitReader(r, 16))
				if string(b) == eof {
					if cw, ok := conn.(interface{ CloseWrite() error }); ok {
						cw.CloseWrite()
					}
				}
				continue
			}
			if _, err := io.Copy(conn, r); err != nil {
				return
			}
		}
	}()
	go func() { // conn -> ws
		defer wg.Done()
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		for {
			n, err := conn.Read(*buf)
			if n > 0 {
				if werr := ws.Write(ctx, websocket.MessageBinary, (*buf)[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				ws.Write(ctx, websocket.MessageText, []byte(eof))
				return
			}
		}
	}()
	wg.Wait()
	ws.Close(websocket.StatusNormalClosure, "")
}
