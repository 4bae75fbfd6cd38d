package architecture

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/gantry-paas/gantry/"

// layers ranks the packages under internal/: a package may import its own
// layer and those below, never one above. The first matching prefix wins.
var layers = []struct {
	prefix string
	rank   int
}{
	// shared helpers: import nothing of the project
	{"applog", 0}, {"artifact", 0}, {"failpoint", 0}, {"h2test", 0}, {"handoff", 0}, {"keylock", 0}, {"layout", 0},
	{"metrics", 0}, {"names", 0}, {"staticsite", 0}, {"wstunnel", 0},
	// pure shapes and rules
	{"control/apitypes", 1}, {"egress/policy", 1}, {"node/cartridge", 1},
	// the store, and the edge (which never sees the store)
	{"control/store", 2}, {"edge/", 2},
	// the policies' enforcement runs on a node, in its gears' namespaces
	{"egress/enforce", 4},
	// the egress router and DNS forwarder (built on the edge's pieces)
	{"egress/", 3},
	// a machine's gears
	{"node/", 4},
	// the control plane
	{"control/", 5},
	// wiring, and the client side (checked apart, below)
	{"server", 6}, {"client", 6}, {"console", 6}, {"architecture", 6},
}

func rank(t *testing.T, rel string) int {
	for _, l := range layers {
		if rel == strings.TrimSuffix(l.prefix, "/") || strings.HasPrefix(rel, l.prefix) || strings.HasPrefix(rel, l.prefix+"/") {
			return l.rank
		}
	}
	t.Errorf("internal/%s is in no layer: add it to the table here and in ARCHITECTURE.md", rel)
	return -1
}

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
}

func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func internalRel(path string) (string, bool) {
	return strings.CutPrefix(path, module+"internal/")
}

// The built code's imports (tests may wire neighbours together).
func TestImports(t *testing.T) {
	for _, p := range packages(t) {
		from, ok := internalRel(p.ImportPath)
		if !ok {
			continue // cmd, e2e, bench: may import anything
		}
		for _, imp := range p.Imports {
			to, ok := internalRel(imp)
			if !ok {
				continue
			}
			switch {
			case strings.HasPrefix(from, "client") || from == "console":
				if !(strings.HasPrefix(to, "client") || to == "control/apitypes" || rank(t, to) == 0) {
					t.Errorf("internal/%s imports internal/%s: the client side (the CLI, the console) uses the API only: it imports only apitypes and shared helpers from the server side", from, to)
				}
			case strings.HasPrefix(from, "edge/"):
				if !strings.HasPrefix(to, "edge/") && rank(t, to) != 0 {
					t.Errorf("internal/%s imports internal/%s: the edge imports neither control nor node (it receives its configuration)", from, to)
				}
			case (strings.HasPrefix(to, "client") || to == "console") && from != "server":
				t.Errorf("internal/%s imports internal/%s: only the wiring uses the client side", from, to)
			case !strings.HasPrefix(to, "client") && rank(t, to) > rank(t, from):
				t.Errorf("internal/%s (layer %d) imports internal/%s (layer %d): upward", from, rank(t, from), to, rank(t, to))
			}
		}
	}
}

// keyPrefixes are the first segments of the store's keys, read from the
// string literals of control/store itself ("apps/", "gears/"…).
func keyPrefixes(t *testing.T, ps []pkg) *regexp.Regexp {
	var prefixes []string
	seen := map[string]bool{}
	for _, p := range ps {
		if rel, _ := internalRel(p.ImportPath); rel != "control/store" {
			continue
		}
		for _, f := range p.GoFiles {
			file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				if _, ok := n.(*ast.ImportSpec); ok {
					return false
				}
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					if m := regexp.MustCompile(`^([a-z]+)/`).FindStringSubmatch(s); m != nil && !seen[m[1]] {
						seen[m[1]] = true
						prefixes = append(prefixes, m[1])
					}
				}
				return true
			})
		}
	}
	if !seen["apps"] || !seen["gears"] || !seen["hosts"] || !seen["ipam"] {
		t.Fatalf("store key prefixes read from control/store: %v; want apps, gears, hosts, ipam among them", prefixes)
	}
	return regexp.MustCompile(`^(` + strings.Join(prefixes, "|") + `)/`)
}

// No store key is spelled outside control/store.
func TestStoreKeys(t *testing.T) {
	ps := packages(t)
	keyLit := keyPrefixes(t, ps)
	for _, p := range ps {
		if rel, _ := internalRel(p.ImportPath); rel == "control/store" {
			continue
		}
		for _, f := range p.GoFiles {
			path := filepath.Join(p.Dir, f)
			file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				if _, ok := n.(*ast.ImportSpec); ok {
					return false
				}
				// A key spelled in a transaction call (tx.Get("x/…")), whatever
				// its prefix, is a new record kind outside the store.
				if call, ok := n.(*ast.CallExpr); ok && len(call.Args) > 0 {
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok && txMethods[sel.Sel.Name] {
						if id, ok := sel.X.(*ast.Ident); ok && id.Name == "tx" && startsWithLiteral(call.Args[0]) {
							t.Errorf("%s: tx.%s with a key spelled out: add a typed accessor to control/store", path, sel.Sel.Name)
						}
					}
				}
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				if s, err := strconv.Unquote(lit.Value); err == nil && keyLit.MatchString(s) {
					t.Errorf("%s: store key %q outside control/store: add a typed accessor there", path, s)
				}
				return true
			})
		}
	}
}

var txMethods = map[string]bool{"Get": true, "Put": true, "Create": true, "Delete": true, "Has": true, "Scan": true}

// startsWithLiteral says whether e is a string literal or a concatenation
// that starts with one.
func startsWithLiteral(e ast.Expr) bool {
	for {
		switch x := e.(type) {
		case *ast.BasicLit:
			return x.Kind == token.STRING
		case *ast.BinaryExpr:
			e = x.X
		default:
			return false
		}
	}
}
