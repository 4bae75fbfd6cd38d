package applog

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestWriteTailRotate(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenWriter(filepath.Join(dir, "g1.log"), 200)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Copy("stdout", strings.NewReader("one\ntwo\nthree\nfour\nfive\nsix\nno-newline"))
	lines, _ := Tail(dir, 3)
	var got []string
	for _, l := range lines {
		got = append(got, l.Gear+":"+l.Stream+":"+l.Text)
	}
	want := "g1:stdout:five g1:stdout:six g1:stdout:no-newline"
	if strings.Join(got, " ") != want {
		t.Errorf("got %q; want %q", strings.Join(got, " "), want)
	}
	all, _ := Tail(dir, 0)
	if len(all) < 5 {
		t.Errorf("rotation lost lines: got %d", len(all))
	}
}

func TestFollowSeesNewGears(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan Line, 10)
	go Follow(ctx, dir, func(l Line) error { got <- l; return nil })
	time.Sleep(50 * time.Millisecond)
	w, _ := OpenWriter(filepath.Join(dir, "g2.log"), 0)
	w.WriteLine("stderr", []byte("hello\n"))
	select {
	case l := <-got:
		if l.Gear != "g2" || l.Text != "hello" || l.Stream != "stderr" {
			t.Errorf("got %+v", l)
		}
	case <-ctx.Done():
		t.Fatal("follow saw nothing")
	}
}

// A worker's or one-off's log file carries its process, so that its lines
// say what ran after the gear is gone.
func TestProcessInFileName(t *testing.T) {
	dir := t.TempDir()
	for gear, proc := range map[string]string{"g1": "", "g2": "worker", "run3": "cron"} {
		w, err := OpenWriter(filepath.Join(dir, FileName(gear, proc)), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteLine("stdout", []byte("hello from "+gear))
		w.Close()
	}
	lines, err := Tail(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range lines {
		got[l.Gear] = l.Process
	}
	if want := map[string]string{"g1": "", "g2": "worker", "run3": "cron"}; !reflect.DeepEqual(got, want) {
		t.Errorf("processes %v; want %v", got, want)
	}
}
