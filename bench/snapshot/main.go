// Command snapshot measures what issue 18 asks of snapshots: save and
// restore time and repository growth for an app with a 1 GiB data
// directory (1024 files of 1 MiB, half random, half text) of which 1%
// changes, beside `tar | zstd` of the same data in the same run (time and
// bytes), and restic alone on the same data as the ceiling (Gantry drives
// restic, so restic's own time is the least a snapshot can take; its
// restore verifies what it wrote, as Gantry's does).
//
//	go run ./bench/snapshot [-mib 1024]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gantry-paas/gantry/bench/internal/benchenv"
)

func main() {
	mib := flag.Int("mib", 1024, "size of the data directory in MiB (files of 1 MiB)")
	flag.Parse()
	if err := run(*mib); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot:", err)
		os.Exit(1)
	}
}

func run(mib int) error {
	for _, bin := range []string{"restic", "zstd", "tar"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed: run scripts/install-deps", bin)
		}
	}
	e, err := benchenv.Start("--isolation", "process")
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.CreateApp("snap", "", "--gear-size", "large"); err != nil { // a 4 GiB disk: room for the data and a restore beside it
		return err
	}
	inData := func(script string) error {
		_, err := e.Gantry("run", "snap", "--", "sh", "-c", "'cd \"$GANTRY_DATA_DIR\" && "+script+"'")
		return err
	}
	half := mib / 2
	fmt.Printf("Making the app's data: %d MiB (%d random files, %d of text)…\n", mib, half, mib-half)
	if err := inData(fmt.Sprintf(`for i in $(seq %d); do head -c 1048576 /dev/urandom > r$i; done; for i in $(seq %d); do seq -f "%%09g GET /api/items?page=%%g 200 1532 0.004" 1 100000 | head -c 1048576 > t$i; done`, half, mib-half)); err != nil {
		return err
	}
	dirs, _ := filepath.Glob(filepath.Join(e.Data, "apps", "*", "data"))
	if len(dirs) != 1 {
		return fmt.Errorf("the app's data directory: %v", dirs)
	}
	data := dirs[0]
	repo := filepath.Join(e.Data, "backups", "restic")
	timed := func(f func() error) (time.Duration, error) {
		start := time.Now()
		err := f()
		return time.Since(start), err
	}
	change := func(round int) error { // 1%: a tenth random, the rest text
		n := max(mib/100, 1)
		return inData(fmt.Sprintf(`for i in $(seq %d %d); do head -c 1048576 /dev/urandom > r$i; done`, round*n+1, round*n+n))
	}

	// The platform's repository exists before (made with its first
	// snapshot, of another app), as restic's below is made by init.
	if _, err := e.CreateApp("first", ""); err != nil {
		return err
	}
	if _, err := e.Gantry("snapshot", "save", "first"); err != nil {
		return err
	}
	// Every tool reads from the page cache: the data is read once first.
	warm := func() error { return sh("cat " + data + "/* > /dev/null") }
	if err := warm(); err != nil {
		return err
	}
	r0 := dirSize(repo)

	// Gantry: the first snapshot, one after 1% changed, a restore.
	var snapID string
	save := func() error {
		out, err := e.Gantry("snapshot", "save", "snap", "--json")
		if err != nil {
			return err
		}
		var s struct {
			ShortID string `json:"short_id"`
		}
		err = json.Unmarshal([]byte(out), &s)
		snapID = s.ShortID
		return err
	}
	g1, err := timed(save)
	if err != nil {
		return err
	}
	r1 := dirSize(repo) - r0
	if err := change(0); err != nil {
		return err
	}
	g2, err := timed(save)
	if err != nil {
		return err
	}
	r2 := dirSize(repo) - r0
	if err := change(1); err != nil {
		return err
	}
	gr, err := timed(func() error { _, err := e.Gantry("snapshot", "restore", "snap", snapID); return err })
	if err != nil {
		return err
	}

	// tar | zstd of the same directory (default level, all cores), and
	// back.
	tmp, err := os.MkdirTemp("", "bench-snapshot")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "data.tar.zst")
	warm()
	tz, err := timed(func() error {
		return sh(fmt.Sprintf("tar -C %s -cf - . | zstd -q -T0 -o %s", data, archive))
	})
	if err != nil {
		return err
	}
	tzBytes := fileSize(archive)
	out := filepath.Join(tmp, "out")
	os.MkdirAll(out, 0o755)
	tzr, err := timed(func() error { return sh(fmt.Sprintf("zstd -q -dc %s | tar -C %s -xf -", archive, out)) })
	if err != nil {
		return err
	}
	os.RemoveAll(out)

	// restic alone on the same directory: a new repository, a first
	// backup, one after 1% changed, a restore.
	rrepo := filepath.Join(tmp, "restic")
	restic := func(args ...string) error {
		c := exec.Command("restic", append([]string{"--repo", rrepo, "--no-cache", "-q"}, args...)...)
		c.Env = append(os.Environ(), "RESTIC_PASSWORD=bench")
		if b, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("restic %v: %v: %s", args, err, b)
		}
		return nil
	}
	if err := restic("init"); err != nil {
		return err
	}
	warm()
	rs1, err := timed(func() error { return restic("backup", data) })
	if err != nil {
		return err
	}
	rsize1 := dirSize(rrepo)
	if err := change(2); err != nil {
		return err
	}
	rs2, err := timed(func() error { return restic("backup", data) })
	if err != nil {
		return err
	}
	rsize2 := dirSize(rrepo)
	rsr, err := timed(func() error { return restic("restore", "latest", "--verify", "--target", out) })
	if err != nil {
		return err
	}

	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	m := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	rate := func(d time.Duration) string { return fmt.Sprintf("%.0f MiB/s", float64(mib)/d.Seconds()) }
	fmt.Printf("\nSnapshots of a %d MiB data directory (half random, half text), 1%% changed between saves\n\n", mib)
	fmt.Printf("| measure | Gantry snapshot | restic alone (ceiling) | tar \\| zstd | Gantry / restic | Gantry / tar\\|zstd |\n|---|---|---|---|---|---|\n")
	fmt.Printf("| first save | %s (%s) | %s (%s) | %s (%s) | %.2f× | %.2f× |\n", sec(g1), rate(g1), sec(rs1), rate(rs1), sec(tz), rate(tz), g1.Seconds()/rs1.Seconds(), g1.Seconds()/tz.Seconds())
	fmt.Printf("| save after 1%% changed | %s | %s | %s (all again) | %.2f× | %.2f× |\n", sec(g2), sec(rs2), sec(tz), g2.Seconds()/rs2.Seconds(), g2.Seconds()/tz.Seconds())
	fmt.Printf("| restore | %s (in place, app serving) | %s | %s | %.2f× | %.2f× |\n", sec(gr), sec(rsr), sec(tzr), gr.Seconds()/rsr.Seconds(), gr.Seconds()/tzr.Seconds())
	fmt.Printf("| stored, first | %s | %s | %s | %.2f× | %.2f× |\n", m(r1), m(rsize1), m(tzBytes), float64(r1)/float64(rsize1), float64(r1)/float64(tzBytes))
	fmt.Printf("| growth, 1%% changed | %s | %s | %s (a second archive) | %.2f× | %.3f× |\n", m(r2-r1), m(rsize2-rsize1), m(tzBytes), float64(r2-r1)/float64(max(rsize2-rsize1, 1)), float64(r2-r1)/float64(tzBytes))
	fmt.Println("\nGantry's save includes the repository bundle, settings and the API round trip; its restore reads the snapshot back verified, swaps the data directory and rolls the deployment out.")
	return nil
}

func sh(script string) error {
	if out, err := exec.Command("sh", "-c", "set -e; "+script).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", script, err, out)
	}
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
