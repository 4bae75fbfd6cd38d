package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gantry-paas/gantry/internal/control/store"
)

var (
	backendOnce sync.Once
	backendPath string
)

// gitBackend finds git-http-backend in git's exec path.
func gitBackend() string {
	backendOnce.Do(func() {
		out, err := exec.Command("git", "--exec-path").Output()
		if err == nil {
			backendPath = filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
		}
	})
	return backendPath
}

// gitHTTP serves /git/DOMAIN/APP.git/... with git's own smart-HTTP backend.
// The password is an API token (any user name); only the owner's apps.
func (a *API) gitHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/git/")
	domain, rest, ok1 := strings.Cut(rest, "/")
	appGit, sub, ok2 := strings.Cut(rest, "/")
	appName, ok3 := strings.CutSuffix(appGit, ".git")
	if !ok1 || !ok2 || !ok3 || !allowedGitPath(sub) {
		http.Error(w, "not a git URL: use /git/DOMAIN/APP.git (see `gantry app show`)", http.StatusNotFound)
		return
	}
	_, tok, ok := r.BasicAuth()
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="Gantry git (password: your API token)"`)
		http.Error(w, "authentication required: use your API token as the password", http.StatusUnauthorized)
		return
	}
	user, err := a.o.Service.UserByToken(tok)
	if errors.Is(err, store.ErrBusy) {
		w.Header().Set("Retry-After", "5")
		http.Error(w, storeBusy().Detail, http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="Gantry git (password: your API token)"`)
		http.Error(w, "invalid API token", http.StatusUnauthorized)
		return
	}
	app, err := a.o.Service.App(user, domain, appName)
	if err != nil {
		http.Error(w, fmt.Sprintf("you have no app %q in domain %q", appName, domain), http.StatusNotFound)
		return
	}
	backend := gitBackend()
	if backend == "" {
		http.Error(w, "git is not installed on the server", http.StatusInternalServerError)
		return
	}
	penv, release := a.o.Builder.GrantPush(user.Name, app.Key())
	defer release()
	// git-http-backend finds the repository under GIT_PROJECT_ROOT by
	// PATH_INFO, which the CGI handler derives from the URL below Root.
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/git/" + app.ID + "/repo.git/" + sub
	h := &cgi.Handler{
		Path: backend,
		Root: "/git",
		Dir:  a.o.Layout.Repo(app.ID),
		Env: []string{
			"GIT_PROJECT_ROOT=" + filepath.Join(a.o.Layout.Root, "apps"),
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + user.Name,
			"PATH=" + os.Getenv("PATH"),
		},
		Stderr: os.Stderr,
	}
	h.Env = append(h.Env, penv...)
	h.ServeHTTP(w, r2)
}

func allowedGitPath(sub string) bool {
	switch sub {
	case "info/refs", "git-upload-pack", "git-receive-pack", "HEAD":
		return true
	}
	return false
}
