package health

import (
	"errors"
	"fmt"
	"testing"
)

func TestRound(t *testing.T) {
	a, b := &State{}, &State{}
	targets := map[string]*State{"a": a, "b": b}
	failing := map[string]bool{"b": true}
	var log []string
	round := func() {
		Round(targets, func(addr string) error {
			if failing[addr] {
				return errors.New("refused")
			}
			return nil
		}, func(addr string, up bool, err error) { log = append(log, fmt.Sprint(addr, " ", up)) })
	}
	round()
	if b.Down() || len(log) != 0 {
		t.Fatalf("down after one failure: %v %v", b.Down(), log)
	}
	round()
	if !b.Down() || a.Down() || fmt.Sprint(log) != "[b false]" {
		t.Fatalf("after two failures: a %v b %v %v", a.Down(), b.Down(), log)
	}
	round()
	if fmt.Sprint(log) != "[b false]" {
		t.Fatalf("reported twice: %v", log)
	}
	failing["b"] = false
	round()
	if b.Down() || fmt.Sprint(log) != "[b false b true]" {
		t.Fatalf("after a pass: %v %v", b.Down(), log)
	}
	a.MarkDown()
	round()
	if a.Down() || fmt.Sprint(log) != "[b false b true a true]" {
		t.Fatalf("a passive mark is cleared by a pass: %v", log)
	}
}
