package router

import (
	"slices"
	"testing"
)

// Many requests for one app are handed over once; Wake never blocks.
func TestWakeQueue(t *testing.T) {
	q := NewWakeQueue()
	for range 1000 {
		q.Wake("apps/acme/blog")
	}
	q.Wake("apps/acme/shop")
	<-q.Ready()
	got := q.Take()
	slices.Sort(got)
	if !slices.Equal(got, []string{"apps/acme/blog", "apps/acme/shop"}) {
		t.Errorf("Take() = %v", got)
	}
	if got := q.Take(); len(got) != 0 {
		t.Errorf("second Take() = %v", got)
	}
}
