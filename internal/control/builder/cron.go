package builder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"github.com/gantry-paas/gantry/internal/control/cron"
	"github.com/gantry-paas/gantry/internal/control/store"
)

// CronDirs are where a tree keeps its periodic executables (OpenShift's
// cron cartridge layout), each with minutely/, hourly/, daily/, weekly/
// and monthly/ below it.
var CronDirs = []string{".gantry/cron", ".openshift/cron"}

// maxCronJobs bounds the jobs of one app.
const maxCronJobs = 50

var safeCronName = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

// FindCron reads a tree's scheduled jobs: app.json's "cron" entries
// ({"command": "…", "schedule": "*/5 * * * *"}, as Dokku reads them) and
// the executables in CronDirs. A schedule that does not parse, an entry
// without a command, or a job file that is not executable refuses the
// build; other files are warnings.
func FindCron(dir string) ([]store.CronJob, []string, error) {
	t, err := openTree(dir)
	if err != nil {
		return nil, nil, err
	}
	defer t.Close()
	var jobs []store.CronJob
	var warnings []string
	data, err := t.readFile("app.json")
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, err
	default:
		var doc struct {
			Cron []struct {
				Command  string `json:"command"`
				Schedule string `json:"schedule"`
			} `json:"cron"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, nil, fmt.Errorf("app.json: %s", jsonErrorAt(err))
		}
		for i, c := range doc.Cron {
			c.Command, c.Schedule = strings.TrimSpace(c.Command), strings.TrimSpace(c.Schedule)
			if c.Command == "" {
				return nil, nil, fmt.Errorf("app.json cron entry %d has no command: add \"command\": \"…\"", i+1)
			}
			if _, err := cron.Parse(c.Schedule); err != nil {
				return nil, nil, fmt.Errorf("app.json cron entry %d: %v", i+1, err)
			}
			jobs = append(jobs, store.CronJob{ID: cron.JobID(c.Schedule, c.Command), Schedule: c.Schedule, Command: c.Command,
				Source: fmt.Sprintf("app.json cron[%d]", i)})
		}
	}
	for _, base := range CronDirs {
		fi, err := t.stat(base)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if !fi.IsDir() {
			return nil, nil, fmt.Errorf("%s is not a directory", base)
		}
		periods, err := t.readDir(base)
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", base, err)
		}
		sort.Slice(periods, func(i, j int) bool { return periods[i].Name() < periods[j].Name() })
		for _, p := range periods {
			schedule, ok := cron.Periods[p.Name()]
			if !ok {
				if !strings.HasPrefix(p.Name(), ".") {
					warnings = append(warnings, fmt.Sprintf("%s/%s is not a cron period and does not run (periods: minutely, hourly, daily, weekly, monthly)", base, p.Name()))
				}
				continue
			}
			dir := base + "/" + p.Name()
			entries, err := t.readDir(dir)
			if err != nil {
				return nil, nil, fmt.Errorf("reading %s: %w", dir, err)
			}
			sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
			for _, e := range entries {
				name, rel := e.Name(), dir+"/"+e.Name()
				if strings.HasPrefix(name, ".") || strings.EqualFold(name, "README") || strings.HasPrefix(strings.ToUpper(name), "README.") {
					continue
				}
				fi, err := t.stat(rel)
				if err != nil {
					return nil, nil, fmt.Errorf("cron job %w", err)
				}
				switch {
				case !fi.Mode().IsRegular():
					warnings = append(warnings, fmt.Sprintf("%s is not a file and does not run", rel))
					continue
				case !safeCronName.MatchString(name):
					return nil, nil, fmt.Errorf("cron job %s: name it with letters, digits, '.', '_', '+' and '-' only", rel)
				case fi.Mode()&0o111 == 0:
					return nil, nil, fmt.Errorf("cron job %s is not executable: run `chmod +x %s && git add %s`, commit and push again", rel, rel, rel)
				}
				command := "exec ./" + rel
				jobs = append(jobs, store.CronJob{ID: cron.JobID(schedule, command), Schedule: schedule, Command: command, Source: rel})
			}
		}
	}
	if len(jobs) > maxCronJobs {
		return nil, nil, fmt.Errorf("the app has %d cron jobs: at most %d", len(jobs), maxCronJobs)
	}
	seen := map[string]string{}
	for _, j := range jobs {
		if other, ok := seen[j.ID]; ok {
			return nil, nil, fmt.Errorf("cron jobs %s and %s are the same command at the same times: keep one", other, j.Source)
		}
		seen[j.ID] = j.Source
	}
	return jobs, warnings, nil
}
