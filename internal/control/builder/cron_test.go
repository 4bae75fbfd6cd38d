package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindCron(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"app.json":                          `{"cron": [{"command": "node cleanup.js", "schedule": "*/5 * * * *"}, {"command": "./report", "schedule": "@daily"}]}`,
		".openshift/cron/minutely/tick":     "#!/bin/sh\necho tick\n",
		".openshift/cron/hourly/README":     "docs",
		".openshift/cron/daily/backup.sh":   "#!/bin/sh\n",
		".openshift/cron/sometimes/x":       "#!/bin/sh\n",
		".openshift/cron/weekly/off.noexec": "#!/bin/sh\n",
	})
	_, _, err := FindCron(dir)
	if err == nil || !strings.Contains(err.Error(), "cron job .openshift/cron/weekly/off is not executable: run `chmod +x") {
		t.Fatalf("a job file that is not executable: %v", err)
	}
	os.Remove(filepath.Join(dir, ".openshift/cron/weekly/off"))
	jobs, warnings, err := FindCron(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, j.Schedule+" | "+j.Command+" | "+j.Source)
		if len(j.ID) != 10 {
			t.Errorf("job ID %q", j.ID)
		}
	}
	want := []string{
		"*/5 * * * * | node cleanup.js | app.json cron[0]",
		"@daily | ./report | app.json cron[1]",
		"@daily | exec ./.openshift/cron/daily/backup.sh | .openshift/cron/daily/backup.sh",
		"* * * * * | exec ./.openshift/cron/minutely/tick | .openshift/cron/minutely/tick",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("jobs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], ".openshift/cron/sometimes is not a cron period") {
		t.Errorf("warnings: %q", warnings)
	}

	for name, tc := range map[string]struct {
		files map[string]string
		err   string
	}{
		"bad_schedule": {map[string]string{"app.json": `{"cron": [{"command": "x", "schedule": "every day"}]}`}, `app.json cron entry 1: schedule "every day" does not parse`},
		"no_command":   {map[string]string{"app.json": `{"cron": [{"schedule": "@daily"}]}`}, "has no command"},
		"bad_json":     {map[string]string{"app.json": `{"cron": `}, "app.json: syntax error"},
		"same_twice":   {map[string]string{"app.json": `{"cron": [{"command": "x", "schedule": "@daily"}, {"command": "x", "schedule": "@daily"}]}`}, "are the same command"},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			write(t, d, tc.files)
			if _, _, err := FindCron(d); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v; want %q", err, tc.err)
			}
		})
	}
	// A job that links out of the checkout is refused, its target unread.
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, ".openshift/cron/hourly"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(d, ".openshift/cron/hourly/escape"))
	if _, _, err := FindCron(d); err == nil || !strings.Contains(err.Error(), "leads out of the repository") {
		t.Errorf("a link out: %v", err)
	}
}
