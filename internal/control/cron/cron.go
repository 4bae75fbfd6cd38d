// Package cron runs apps' scheduled jobs: app.json's cron entries and
// .openshift/cron/PERIOD/ executables, each in a one-off gear of the app's
// active deployment at its times. One machine runs them (the "cron"
// leader in a cluster); a job still running when it is due again is
// skipped, and said. Schedules are parsed by robfig/cron; the runner is
// ours.
package cron

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	robfig "github.com/robfig/cron/v3"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Schedule tells a job's next time after a given one.
type Schedule = robfig.Schedule

var parser = robfig.NewParser(robfig.Minute | robfig.Hour | robfig.Dom | robfig.Month | robfig.Dow | robfig.Descriptor)

// Parse reads a schedule: five fields (minute hour day-of-month month
// day-of-week, as crontab has them) or a descriptor (@hourly, @daily,
// @weekly, @monthly, @yearly, @every 10m). Times are UTC.
func Parse(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("the schedule is empty: use five fields such as \"*/5 * * * *\", or @hourly")
	}
	if strings.HasPrefix(spec, "@every") {
		d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(spec, "@every")))
		if err != nil || d < time.Minute {
			return nil, fmt.Errorf("schedule %q: @every needs a duration of at least 1m, e.g. @every 15m", spec)
		}
	}
	s, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q does not parse (%v): use five fields, minute hour day month weekday, e.g. \"*/5 * * * *\" or \"0 3 * * 1\", or @hourly, @daily, @weekly, @monthly", spec, err)
	}
	return s, nil
}

// Periods are .openshift/cron's directories with their schedules.
var Periods = map[string]string{
	"minutely": "* * * * *",
	"hourly":   "@hourly",
	"daily":    "@daily",
	"weekly":   "@weekly",
	"monthly":  "@monthly",
}

// JobID names a job by its schedule and command: the same job keeps its
// status across deployments.
func JobID(schedule, command string) string {
	h := sha256.Sum256([]byte(schedule + "\x00" + command))
	return hex.EncodeToString(h[:5])
}

// Runner runs one command of an app in a one-off gear of its active
// deployment, its output to the job's log, and returns the gear and the
// command's exit status.
type Runner interface {
	RunJob(ctx context.Context, appKey, jobID, command string) (gear string, exit int, err error)
}

// Options configure the scheduler.
type Options struct {
	Store  *store.Store
	Runner Runner
	// Self is this machine's name; the leader of role "cron" runs jobs.
	Self string
	// Minute is how long a minute of the schedules lasts (tests shorten
	// it: with 2s, "* * * * *" runs every 2 s). Default 1m.
	Minute time.Duration
	// Event records what happened to an app (skipped and failed runs).
	Event func(app *store.App, e store.Event)
	// Note writes a line into a job's log (a skipped run).
	Note func(appID, jobID, line string)
	Log  *slog.Logger
}

// Scheduler runs the jobs at their times.
type Scheduler struct {
	o     Options
	clock clock
	mu    sync.Mutex
	busy  map[string]bool // app ID/job ID → running now
	wg    sync.WaitGroup
}

// New makes a scheduler.
func New(o Options) *Scheduler {
	if o.Minute <= 0 {
		o.Minute = time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{o: o, clock: newClock(time.Now(), o.Minute), busy: map[string]bool{}}
}

// clock is schedule time: real time, or real time sped up around base so
// that a minute lasts Minute.
type clock struct {
	base  time.Time
	scale float64
}

func newClock(now time.Time, minute time.Duration) clock {
	return clock{base: now.Truncate(time.Minute), scale: float64(time.Minute) / float64(minute)}
}

// at is the schedule time of real time t.
func (c clock) at(t time.Time) time.Time {
	if c.scale == 1 {
		return t
	}
	return c.base.Add(time.Duration(float64(t.Sub(c.base)) * c.scale))
}

// real is the real time of schedule time t.
func (c clock) real(t time.Time) time.Time {
	if c.scale == 1 {
		return t
	}
	return c.base.Add(time.Duration(float64(t.Sub(c.base)) / c.scale))
}

// Next is the real time a job of schedule spec runs next after now.
func (s *Scheduler) Next(spec string, now time.Time) (time.Time, error) {
	sched, err := Parse(spec)
	if err != nil {
		return time.Time{}, err
	}
	return s.clock.real(sched.Next(s.clock.at(now).UTC())), nil
}

// Run runs the jobs while this machine leads the "cron" role (always on
// one machine), until ctx ends; runs in progress finish first.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.wg.Wait()
	return s.o.Store.Lead(ctx, "cron", s.o.Self, 5*time.Second, func(ctx context.Context) {
		s.o.Log.Info("running the apps' cron jobs here")
		s.loop(ctx)
	})
}

func (s *Scheduler) loop(ctx context.Context) {
	s.clearRunning()
	tick := min(time.Second, s.o.Minute/8)
	last := s.clock.at(time.Now()).UTC()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.clock.at(time.Now()).UTC()
		s.due(ctx, last, now)
		last = now
	}
}

// clearRunning marks as ended the runs a stopped or lost leader left
// marked running: they ended with it.
func (s *Scheduler) clearRunning() {
	s.o.Store.Update(func(tx *store.Tx) error {
		apps, err := store.ListApps(tx)
		if err != nil {
			return err
		}
		for _, a := range apps {
			sts, err := store.ListCron(tx, a.ID)
			if err != nil {
				return err
			}
			for _, st := range sts {
				if st.Running {
					st.Running, st.Error = false, "the machine that ran it stopped"
					if err := tx.Put(store.CronKey(a.ID, st.Job), &st); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// due starts every job with a time in (from, to].
func (s *Scheduler) due(ctx context.Context, from, to time.Time) {
	type job struct {
		app store.App
		job store.CronJob
	}
	var jobs []job
	s.o.Store.View(func(tx *store.Tx) error {
		apps, err := store.ListApps(tx)
		if err != nil {
			return err
		}
		for _, a := range apps {
			if a.ActiveDeployment == "" || a.Stopped {
				continue
			}
			var d store.Deployment
			if tx.Get(store.DeploymentKey(a.ID, a.ActiveDeployment), &d) != nil {
				continue
			}
			for _, j := range d.Cron {
				jobs = append(jobs, job{a, j})
			}
		}
		return nil
	})
	for _, j := range jobs {
		sched, err := Parse(j.job.Schedule)
		if err != nil {
			continue // refused at build time; an older record
		}
		if next := sched.Next(from); next.After(to) {
			continue
		}
		s.start(ctx, j.app, j.job)
	}
}

// start runs a job in the background, or skips it while its last run
// goes on.
func (s *Scheduler) start(ctx context.Context, app store.App, job store.CronJob) {
	key := app.ID + "/" + job.ID
	s.mu.Lock()
	if s.busy[key] {
		s.mu.Unlock()
		s.skipped(app, job)
		return
	}
	s.busy[key] = true
	s.mu.Unlock()
	started := time.Now().UTC()
	s.update(app.ID, job.ID, func(st *store.CronStatus) { st.Running, st.Last, st.Error = true, started, "" })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.busy, key)
			s.mu.Unlock()
		}()
		gear, exit, err := s.o.Runner.RunJob(ctx, app.Key(), job.ID, job.Command)
		took := time.Since(started)
		s.update(app.ID, job.ID, func(st *store.CronStatus) {
			st.Running, st.Took, st.Gear, st.Exit, st.Runs = false, took, gear, exit, st.Runs+1
			if err != nil {
				st.Error, st.Exit = err.Error(), -1
			}
			if err != nil || exit != 0 {
				st.Failures++
			}
		})
		switch {
		case err != nil:
			s.o.Log.Warn("cron job could not run", "app", app.FullName(), "job", job.ID, "err", err)
			s.event(&app, store.Event{Kind: "cron_failed", Reason: fmt.Sprintf("cron job %s (%s) could not run: %v", job.ID, job.Command, err)})
		case exit != 0:
			s.event(&app, store.Event{Kind: "cron_failed", Reason: fmt.Sprintf("cron job %s (%s) exited with status %d after %s", job.ID, job.Command, exit, took.Round(time.Millisecond))})
		}
	}()
}

func (s *Scheduler) skipped(app store.App, job store.CronJob) {
	now := time.Now().UTC()
	var since time.Time
	s.update(app.ID, job.ID, func(st *store.CronStatus) {
		st.Skipped++
		st.LastSkipped = now
		since = st.Last
	})
	why := fmt.Sprintf("cron job %s (%s) skipped: the run started at %s is still going", job.ID, job.Command, since.Format(time.RFC3339))
	s.o.Log.Info(why, "app", app.FullName())
	s.event(&app, store.Event{Kind: "cron_skipped", Reason: why})
	if s.o.Note != nil {
		s.o.Note(app.ID, job.ID, why)
	}
}

func (s *Scheduler) event(app *store.App, e store.Event) {
	if s.o.Event != nil {
		s.o.Event(app, e)
	}
}

func (s *Scheduler) update(appID, jobID string, f func(*store.CronStatus)) {
	err := s.o.Store.Update(func(tx *store.Tx) error {
		var st store.CronStatus
		if err := tx.Get(store.CronKey(appID, jobID), &st); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		st.Job = jobID
		f(&st)
		return tx.Put(store.CronKey(appID, jobID), &st)
	})
	if err != nil {
		s.o.Log.Warn("recording a cron job's status", "job", jobID, "err", err)
	}
}

// Entry is one job of an app as `gantry cron list` shows it.
type Entry struct {
	Job    store.CronJob
	Status store.CronStatus
	Next   time.Time
}

// List returns the jobs of an app's active deployment with their last
// runs and next times.
func (s *Scheduler) List(app *store.App) ([]Entry, error) {
	var dep store.Deployment
	var sts []store.CronStatus
	err := s.o.Store.View(func(tx *store.Tx) error {
		if app.ActiveDeployment == "" {
			return nil
		}
		if err := tx.Get(store.DeploymentKey(app.ID, app.ActiveDeployment), &dep); err != nil {
			return err
		}
		var err error
		sts, err = store.ListCron(tx, app.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	by := map[string]store.CronStatus{}
	for _, st := range sts {
		by[st.Job] = st
	}
	now := time.Now()
	out := []Entry{}
	for _, j := range dep.Cron {
		e := Entry{Job: j, Status: by[j.ID]}
		if !app.Stopped {
			e.Next, _ = s.Next(j.Schedule, now)
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].Job.Source < out[k].Job.Source })
	return out, nil
}
