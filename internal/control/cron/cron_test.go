package cron

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

func TestParse(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 7, 30, 0, time.UTC)
	for spec, next := range map[string]string{
		"*/5 * * * *": "10:10",
		"0 3 * * *":   "03:00",
		"@hourly":     "11:00",
		"@every 15m":  "10:22",
	} {
		s, err := Parse(spec)
		if err != nil {
			t.Fatalf("Parse(%q): %v", spec, err)
		}
		if got := s.Next(at).Format("15:04"); got != next {
			t.Errorf("%q after 10:07:30: %s; want %s", spec, got, next)
		}
	}
	for spec, want := range map[string]string{
		"":              "empty",
		"* * * *":       "does not parse",
		"61 * * * *":    "does not parse",
		"* * * * * *":   "does not parse", // no seconds field
		"@every 10s":    "at least 1m",
		"@fortnightly":  "does not parse",
		"*/5 * * * mon": "",
	} {
		_, err := Parse(spec)
		if want == "" {
			if err != nil {
				t.Errorf("Parse(%q): %v", spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v; want an error with %q", spec, err, want)
		}
	}
}

// A shortened minute maps schedule time to real time and back.
func TestClock(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	c := newClock(now, 2*time.Second) // 30× faster
	if got := c.at(now.Add(4 * time.Second)); !got.Equal(now.Add(2 * time.Minute)) {
		t.Errorf("4 s after the base is %s in schedule time; want 2 minutes after", got)
	}
	if got := c.real(now.Add(3 * time.Minute)); !got.Equal(now.Add(6 * time.Second)) {
		t.Errorf("3 schedule minutes is %s; want 6 s", got)
	}
}

type fakeRunner struct {
	mu    sync.Mutex
	runs  []string
	exit  int
	block chan struct{}
}

func (f *fakeRunner) RunJob(ctx context.Context, appKey, jobID, command string) (string, int, error) {
	f.mu.Lock()
	f.runs = append(f.runs, command)
	block, exit := f.block, f.exit
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	return "gear-" + jobID, exit, nil
}

func (f *fakeRunner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.runs)
}

// Due jobs run with their status recorded; a job still running when due
// again is skipped, counted and said; a stopped app's jobs do not run.
func TestSchedulerRunsAndSkips(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	job := store.CronJob{ID: JobID("* * * * *", "tick"), Schedule: "* * * * *", Command: "tick", Source: "app.json cron[0]"}
	app := store.App{ID: "a1", Name: "blog", Domain: "acme", ActiveDeployment: "d1"}
	st.Update(func(tx *store.Tx) error {
		tx.Put(app.Key(), &app)
		return tx.Put(store.DeploymentKey("a1", "d1"), &store.Deployment{ID: "d1", AppID: "a1", Cron: []store.CronJob{job}})
	})
	run := &fakeRunner{exit: 3}
	var mu sync.Mutex
	var events, notes []string
	s := New(Options{Store: st, Runner: run, Minute: time.Minute,
		Event: func(_ *store.App, e store.Event) {
			mu.Lock()
			events = append(events, e.Kind+": "+e.Reason)
			mu.Unlock()
		},
		Note: func(_, _, line string) { mu.Lock(); notes = append(notes, line); mu.Unlock() }})
	ctx := context.Background()
	t0 := time.Date(2026, 12, 5, 10, 0, 30, 0, time.UTC)
	status := func() store.CronStatus {
		var cs store.CronStatus
		st.View(func(tx *store.Tx) error { return tx.Get(store.CronKey("a1", job.ID), &cs) })
		return cs
	}
	// Nothing due within the same minute.
	s.due(ctx, t0, t0.Add(20*time.Second))
	s.wg.Wait()
	if run.count() != 0 {
		t.Fatalf("ran %d times before its time", run.count())
	}
	s.due(ctx, t0, t0.Add(40*time.Second)) // 10:01:00 passes
	s.wg.Wait()
	if cs := status(); run.count() != 1 || cs.Runs != 1 || cs.Exit != 3 || cs.Failures != 1 || cs.Running || cs.Gear != "gear-"+job.ID {
		t.Fatalf("after one run: %d runs, status %+v", run.count(), cs)
	}
	if len(events) != 1 || !strings.Contains(events[0], "exited with status 3") {
		t.Errorf("events: %q", events)
	}

	// A run that goes on past the next time: that time is skipped.
	run.mu.Lock()
	run.block, run.exit = make(chan struct{}), 0
	run.mu.Unlock()
	s.due(ctx, t0.Add(time.Minute), t0.Add(2*time.Minute))
	for !status().Running {
		time.Sleep(time.Millisecond)
	}
	s.due(ctx, t0.Add(2*time.Minute), t0.Add(3*time.Minute))
	close(run.block)
	s.wg.Wait()
	if cs := status(); run.count() != 2 || cs.Skipped != 1 || cs.Runs != 2 || cs.Exit != 0 {
		t.Errorf("after a skip: %d runs, status %+v", run.count(), cs)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "skipped: the run started at") || !strings.Contains(events[len(events)-1], "cron_skipped") {
		t.Errorf("the skip was not said: notes %q, events %q", notes, events)
	}

	// A stopped app's jobs do not run, and list shows no next time.
	app.Stopped = true
	st.Update(func(tx *store.Tx) error { return tx.Put(app.Key(), &app) })
	s.due(ctx, t0.Add(3*time.Minute), t0.Add(4*time.Minute))
	s.wg.Wait()
	if run.count() != 2 {
		t.Errorf("a stopped app's job ran")
	}
	entries, err := s.List(&app)
	if err != nil || len(entries) != 1 || !entries[0].Next.IsZero() || entries[0].Status.Runs != 2 {
		t.Errorf("list: %v %+v", err, entries)
	}
}
