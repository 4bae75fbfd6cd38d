package sshd

import (
	"strings"
	"testing"
)

func TestParseGitCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "service domain app" or "error: substring"
	}{
		{[]string{"git-receive-pack", "/acme/blog.git"}, "git-receive-pack acme blog"},
		{[]string{"git-upload-pack", "acme/blog.git"}, "git-upload-pack acme blog"},
		{[]string{"git-upload-pack", "acme/blog"}, "git-upload-pack acme blog"},
		{[]string{"git-upload-pack", "~/acme/blog.git/"}, "git-upload-pack acme blog"},
		{[]string{"git", "upload-pack", "/acme/blog.git"}, "git-upload-pack acme blog"},
		{[]string{"git-receive-pack", "--upload-pack=x"}, "error: invalid"},
		{[]string{"git-receive-pack", "/acme/../etc/passwd"}, "error: not an app"},
		// A path is only ever a DOMAIN/APP name looked up in the store.
		{[]string{"git-receive-pack", "/etc/passwd"}, "git-receive-pack etc passwd"},
		{[]string{"git-receive-pack", "acme/blog.git", "extra"}, "error: exactly one"},
		{[]string{"sh", "-c", "id"}, "error: not a git command"},
		{[]string{"git-upload-archive", "acme/blog.git"}, "error: not a git command"},
		{[]string{"git-receive-pack", "acme/Blog.git"}, "error: not an app"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			gc, err := ParseGitCommand(tc.args)
			got := ""
			if err != nil {
				got = "error: " + err.Error()
				if w, ok := strings.CutPrefix(tc.want, "error: "); !ok || !strings.Contains(err.Error(), w) {
					t.Errorf("got %q; want %q", got, tc.want)
				}
				return
			}
			got = gc.Service + " " + gc.Domain + " " + gc.App
			if got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

func FuzzParseGitCommand(f *testing.F) {
	f.Add("git-receive-pack", "/acme/blog.git")
	f.Add("git-upload-pack", "-x")
	f.Add("git", "../../x")
	f.Fuzz(func(t *testing.T, svc, path string) {
		gc, err := ParseGitCommand([]string{svc, path})
		if err != nil {
			return
		}
		for _, s := range []string{gc.Domain, gc.App} {
			if s == "" || strings.ContainsAny(s, "/.\\ ") || strings.HasPrefix(s, "-") {
				t.Errorf("accepted %q %q as %+v", svc, path, gc)
			}
		}
		if gc.Service != "git-receive-pack" && gc.Service != "git-upload-pack" {
			t.Errorf("service %q", gc.Service)
		}
	})
}

func TestParseGearCommand(t *testing.T) {
	for raw, want := range map[string]string{
		"gear acme/blog":                        "acme blog  ",
		"gear acme/blog -- echo 'a b' | wc -c":  "acme blog  echo 'a b' | wc -c",
		"gear acme/blog --gear abc123 -- id -u": "acme blog abc123 id -u",
		"gear acme/blog --gear abc123":          "acme blog abc123 ",
		"gear acme/blog --":                     "acme blog  ",
		"gear /etc":                             "error",
		"gear acme/blog --gear":                 "error",
		"gear acme/blog --gear ../x -- id":      "error",
		"gear acme/blog extra":                  "error",
		"shell acme/blog":                       "error",
		"run acme/blog -- rake db:migrate":      "acme blog  rake db:migrate (one-off)",
		"run acme/blog":                         "acme blog   (one-off)",
		"run acme/blog --gear abc123 -- id":     "error",
	} {
		t.Run(strings.ReplaceAll(raw, " ", "_"), func(t *testing.T) {
			gc, err := ParseGearCommand(raw)
			got := "error"
			if err == nil {
				got = gc.Domain + " " + gc.App + " " + gc.Gear + " " + gc.Command
				if gc.OneOff {
					got += " (one-off)"
				}
			}
			if got != want {
				t.Errorf("got %q; want %q", got, want)
			}
		})
	}
}
