// Package applog writes and reads the log files of an app's gears: one file
// per gear (GEAR.log, rotated to GEAR.log.1), one line per output line as
// "TIME STREAM TEXT". The shim writes; the API reads, merges and follows.
//
// The shim links this package: it imports only standard packages whose
// initialisation comes early (not path/filepath; see node/helpers).
package applog

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Line is one logged line.
type Line struct {
	Time   time.Time `json:"time"`
	Gear   string    `json:"gear"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
	// Process is what the gear runs: web, a worker type, run, cron,
	// release (from the file's name), or a cartridge (set by the API).
	Process string `json:"process,omitempty"`
}

// MaxLine is the longest line kept; longer output is split.
const MaxLine = 16 << 10

// Writer appends timestamped lines to a gear's log file and rotates it when
// it passes MaxSize. It is safe for concurrent use by several streams.
type Writer struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	MaxSize int64
}

// OpenWriter opens (appending) the log file at path.
func OpenWriter(path string, maxSize int64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening log %s: %w", path, err)
	}
	fi, _ := f.Stat()
	w := &Writer{path: path, f: f, MaxSize: maxSize}
	if fi != nil {
		w.size = fi.Size()
	}
	return w, nil
}

// WriteLine writes one line of the given stream.
func (w *Writer) WriteLine(stream string, text []byte) {
	var b bytes.Buffer
	b.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.Write(bytes.TrimRight(text, "\r\n"))
	b.WriteByte('\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.MaxSize > 0 && w.size+int64(b.Len()) > w.MaxSize {
		w.rotate()
	}
	n, _ := w.f.Write(b.Bytes())
	w.size += int64(n)
}

func (w *Writer) rotate() {
	w.f.Close()
	os.Rename(w.path, w.path+".1")
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		// Keep writing to nowhere rather than crash the gear.
		f, _ = os.Open(os.DevNull)
	}
	w.f, w.size = f, 0
}

// Copy reads r line by line into the log as stream until r ends.
func (w *Writer) Copy(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		for len(line) > MaxLine {
			w.WriteLine(stream, line[:MaxLine])
			line = line[MaxLine:]
		}
		if len(line) > 0 && (err == nil || err == bufio.ErrBufferFull || err == io.EOF) {
			w.WriteLine(stream, line)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// Parse parses one log line of gear.
func Parse(gear, s string) (Line, bool) {
	ts, rest, ok := strings.Cut(s, " ")
	if !ok {
		return Line{}, false
	}
	stream, text, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return Line{}, false
	}
	return Line{Time: t, Gear: gear, Stream: stream, Text: text}, true
}

// gearFiles lists dir's gear logs, newest first by modification time.
func gearFiles(dir string) []string {
	var matches []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			matches = append(matches, dir+"/"+e.Name())
		}
	}
	sort.Slice(matches, func(i, j int) bool {
		a, _ := os.Stat(matches[i])
		b, _ := os.Stat(matches[j])
		if a == nil || b == nil {
			return false
		}
		return a.ModTime().After(b.ModTime())
	})
	return matches
}

// FileName is the log file of a gear that runs process: GEAR.log for web
// and cartridges (process ""), GEAR.PROCESS.log for a worker, one-off or
// cron run, so that its lines keep their process after the gear is gone.
func FileName(gear, process string) string {
	if process == "" || process == "web" {
		return gear + ".log"
	}
	return gear + "." + process + ".log"
}

// GearOf returns the gear and process of a log file ("" : as the gear
// is).
func GearOf(path string) (gear, process string) {
	gear, process, _ = strings.Cut(strings.TrimSuffix(path[strings.LastIndexByte(path, '/')+1:], ".log"), ".")
	return gear, process
}

// Tail returns the last n lines across all gear logs in dir, oldest first.
func Tail(dir string, n int) ([]Line, error) {
	var all []Line
	for _, path := range gearFiles(dir) {
		gear, process := GearOf(path)
		for _, p := range []string{path + ".1", path} {
			data, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			for _, s := range strings.Split(string(data), "\n") {
				if l, ok := Parse(gear, s); ok {
					l.Process = process
					all = append(all, l)
				}
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all, nil
}

// Follow calls fn for every line appended to any gear log in dir after the
// call starts, including logs of gears created later, until ctx is done.
func Follow(ctx context.Context, dir string, fn func(Line) error) error {
	offsets := map[string]int64{}
	for _, p := range gearFiles(dir) {
		if fi, err := os.Stat(p); err == nil {
			offsets[p] = fi.Size()
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range gearFiles(dir) {
			fi, err := os.Stat(p)
			if err != nil {
				continue
			}
			off, known := offsets[p]
			if fi.Size() < off { // rotated
				off = 0
			}
			if known && fi.Size() == off {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			f.Seek(off, io.SeekStart)
			data, _ := io.ReadAll(io.LimitReader(f, 4<<20))
			f.Close()
			// Only whole lines; the rest is read next time.
			end := bytes.LastIndexByte(data, '\n') + 1
			offsets[p] = off + int64(end)
			gear, process := GearOf(p)
			for _, s := range strings.Split(string(data[:end]), "\n") {
				if l, ok := Parse(gear, s); ok {
					l.Process = process
					if err := fn(l); err != nil {
						return err
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
