package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"

	"github.com/coder/websocket"
	"github.com/creack/pty"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// GearExec prepares a command in a gear of this machine (the agent: the
// same exec path as `gantry ssh`).
type GearExec interface {
	ExecCommand(appKey, gearID, command string, tty bool, term string) (*exec.Cmd, string, error)
}

// execMessage is a terminal's control message (a text frame): its size.
type execMessage struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

// exec serves a terminal in one of the caller's gears over a WebSocket
// (the console's terminal): binary frames carry the keys in and the
// screen out, text frames the terminal's size. The WebSocket must come
// from the same origin as the page (coder/websocket checks the Origin).
func (a *API) exec(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	u, err := a.o.Service.UserByToken(strings.TrimSpace(tok))
	if err != nil {
		http.Error(w, "invalid or missing API token", http.StatusUnauthorized)
		return
	}
	app, err := a.o.Service.App(u, r.PathValue("domain"), r.PathValue("app"))
	if err != nil {
		http.Error(w, asProblem(a, "opening a terminal", err).Error(), http.StatusNotFound)
		return
	}
	gear := r.URL.Query().Get("gear")
	if gear == "" {
		gears, _ := a.o.Service.Gears(app)
		for _, g := range gears {
			if g.Web() && g.State == store.GearRunning {
				gear = g.ID
				break
			}
		}
	}
	if gear == "" {
		http.Error(w, "the app runs no gear: start it first", http.StatusConflict)
		return
	}
	cmd, gearID, err := a.o.Exec.ExecCommand(app.Key(), gear, "", true, "xterm-256color")
	var elsewhere interface{ Elsewhere() string }
	if errors.As(err, &elsewhere) {
		http.Error(w, fmt.Sprintf("gear %s runs on %s: open its terminal with `gantry ssh %s --gear %s`", gearID, elsewhere.Elsewhere(), app.Name, gearID), http.StatusConflict)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	cols, _ := strconv.Atoi(r.URL.Query().Get("cols"))
	rows, _ := strconv.Atoi(r.URL.Query().Get("rows"))
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: uint16(max(cols, 80)), Rows: uint16(max(rows, 24))})
	if err != nil {
		ws.Close(websocket.StatusInternalError, "starting the shell: "+err.Error())
		return
	}
	defer f.Close()
	a.log.Info("console terminal", "user", u.Name, "app", app.FullName(), "gear", gearID)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // the screen
		defer cancel()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if ws.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { // the keys and the size
		defer cancel()
		for {
			typ, msg, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageText {
				var m execMessage
				if json.Unmarshal(msg, &m) == nil && m.Cols > 0 && m.Rows > 0 {
					pty.Setsize(f, &pty.Winsize{Cols: uint16(m.Cols), Rows: uint16(m.Rows)})
				}
				continue
			}
			if _, err := f.Write(msg); err != nil {
				return
			}
		}
	}()
	<-ctx.Done()
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
	cmd.Wait()
	ws.Close(websocket.StatusNormalClosure, "the shell ended")
}
