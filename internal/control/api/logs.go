package api

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/applog"
	"github.com/gantry-paas/gantry/internal/control/store"
)

func (a *API) registerLogs() {
	type logsIn struct {
		AppRef
		Lines  int  `query:"lines" default:"100" minimum:"0" maximum:"10000" doc:"How many past lines"`
		Follow bool `query:"follow" doc:"Keep the response open and stream new lines"`
	}
	huma.Register(a.h, huma.Operation{OperationID: "app-logs", Method: http.MethodGet, Path: "/v1/domains/{domain}/apps/{app}/logs", Security: bearer,
		Summary: "An app's logs", Description: "Newline-delimited JSON, one object per line (time, gear, stream, text), oldest first. With follow=true the response stays open.",
		Tags: []string{"apps"},
		Responses: map[string]*huma.Response{"200": {Description: "NDJSON log lines", Content: map[string]*huma.MediaType{
			"application/x-ndjson": {Schema: &huma.Schema{Type: "string"}}}}}},
		func(ctx context.Context, in *logsIn) (*huma.StreamResponse, error) {
			app, err := a.loadApp(ctx, in.AppRef)
			if err != nil {
				return nil, err
			}
			dir := a.o.Layout.Logs(app.ID)
			procs := a.gearProcesses(app)
			name := func(l *applog.Line) {
				if l.Process != "" {
					return // the log file says
				}
				if p, ok := procs[l.Gear]; ok {
					l.Process = p
					return
				}
				// A gear started after the request (follow mode).
				procs = a.gearProcesses(app)
				if p, ok := procs[l.Gear]; ok {
					l.Process = p
				} else if strings.HasPrefix(l.Gear, "run") {
					l.Process = "run" // a one-off, gone now
				} else {
					l.Process = "web"
				}
			}
			lines, err := applog.Tail(dir, in.Lines)
			if err != nil {
				return nil, a.internal("reading logs", err)
			}
			if a.o.RemoteLogs != nil { // the other machines' gears
				lines = append(lines, a.o.RemoteLogs.Tail(ctx, app.ID, in.Lines)...)
				sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
				if len(lines) > in.Lines {
					lines = lines[len(lines)-in.Lines:]
				}
			}
			return &huma.StreamResponse{Body: func(hctx huma.Context) {
				hctx.SetHeader("Content-Type", "application/x-ndjson")
				hctx.SetHeader("Cache-Control", "no-store")
				w := hctx.BodyWriter()
				enc := json.NewEncoder(w)
				flush := func() {
					if f, ok := w.(http.Flusher); ok {
						f.Flush()
					}
				}
				for _, l := range lines {
					name(&l)
					enc.Encode(l)
				}
				flush()
				if !in.Follow {
					return
				}
				var mu sync.Mutex
				emit := func(l applog.Line) error {
					mu.Lock()
					defer mu.Unlock()
					name(&l)
					if err := enc.Encode(l); err != nil {
						return err
					}
					flush()
					return nil
				}
				if a.o.RemoteLogs != nil {
					go a.o.RemoteLogs.Follow(hctx.Context(), app.ID, emit)
				}
				applog.Follow(hctx.Context(), dir, emit)
			}}, nil
		})
}

// gearProcesses maps the app's gear IDs to what they run.
func (a *API) gearProcesses(app *store.App) map[string]string {
	out := map[string]string{}
	gears, _ := a.o.Service.Gears(app)
	for _, g := range gears {
		out[g.ID] = g.Kind()
	}
	return out
}
