package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// KnownHooks are all the action hooks Gantry runs. A deploy runs
// pre_build, the cartridge build, build, deploy, and post_deploy once the
// new gears serve, as OpenShift did; pre_start/post_start and
// pre_stop/post_stop run around each gear's start and stop.
var KnownHooks = map[string]bool{
	"pre_build": true, "build": true, "deploy": true, "post_deploy": true,
	"pre_start": true, "post_start": true, "pre_stop": true, "post_stop": true,
}

// HookDirs are searched in order; the first that exists is used.
var HookDirs = []string{".gantry/action_hooks", ".openshift/action_hooks"}

// Hooks are the action hooks found in a source tree.
type Hooks struct {
	Dir      string            // relative hook directory, "" if none
	Paths    map[string]string // hook name -> absolute path
	Warnings []string
}

// FindHooks looks for action hooks in src: in the first of HookDirs that
// holds a hook (a directory with only a README, such as the starter
// code's, gives way to the next); hooks in a later directory are then
// ignored, with a warning. A known hook that is not executable is an
// error that says how to fix it; unknown files are reported as warnings
// (with a suggestion when they look like a typo).
func FindHooks(src string) (*Hooks, error) {
	t, err := openTree(src)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var found []*Hooks
	for _, d := range HookDirs {
		fi, err := t.stat(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			continue
		}
		h, err := readHooks(t, d)
		if err != nil {
			return nil, err
		}
		found = append(found, h)
	}
	if len(found) == 0 {
		return &Hooks{Paths: map[string]string{}}, nil
	}
	chosen := found[0]
	for _, h := range found {
		if len(h.Paths) > 0 {
			chosen = h
			break
		}
	}
	for _, h := range found {
		if h != chosen && len(h.Paths) > 0 {
			chosen.Warnings = append(chosen.Warnings, fmt.Sprintf("the hooks in %s do not run: %s has hooks, and only one hook directory is used", h.Dir, chosen.Dir))
		}
	}
	return chosen, nil
}

// readHooks reads the hooks of one directory of the tree.
func readHooks(t *tree, dir string) (*Hooks, error) {
	h := &Hooks{Dir: dir, Paths: map[string]string{}}
	entries, err := t.readDir(h.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", h.Dir, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		name := e.Name()
		rel := h.Dir + "/" + name
		if !KnownHooks[name] {
			if s := SuggestHook(name); s != "" {
				h.Warnings = append(h.Warnings, fmt.Sprintf("%s is not an action hook name and will not run: did you mean %s?", rel, s))
			} else if !strings.HasPrefix(name, ".") && !strings.EqualFold(name, "README") && !strings.HasPrefix(strings.ToUpper(name), "README.") {
				h.Warnings = append(h.Warnings, fmt.Sprintf("%s is not an action hook name and will not run (known: %s)", rel, strings.Join(sortedKnown(), ", ")))
			}
			continue
		}
		if !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			return nil, fmt.Errorf("action hook %s is not a regular file", rel)
		}
		fi, err := t.stat(rel)
		if err != nil {
			return nil, fmt.Errorf("action hook %w", err)
		}
		if fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("action hook %s is not executable: run `chmod +x %s && git add %s`, commit and push again", rel, rel, rel)
		}
		h.Paths[name] = t.abs(rel)
	}
	return h, nil
}

// SuggestHook returns the known hook name a misspelt one most likely means,
// or "".
func SuggestHook(name string) string {
	n := strings.ToLower(name)
	n = strings.TrimSuffix(n, ".sh")
	n = strings.ReplaceAll(n, "-", "_")
	if KnownHooks[n] && n != name {
		return n
	}
	return ""
}

func sortedKnown() []string {
	var out []string
	for k := range KnownHooks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
