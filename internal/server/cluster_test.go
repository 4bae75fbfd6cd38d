package server

import (
	"fmt"
	"testing"
)

func TestParseRoles(t *testing.T) {
	for _, c := range []struct {
		flag    string
		cluster bool
		want    string
	}{
		{"", false, "[control node edge]"},
		{"control,node,edge", false, "[control node edge]"},
		{"node, edge", true, "[node edge]"},
		{"edge,edge", true, "[edge]"},
		{"node,edge", false, "error"},
		{"router", true, "error"},
		{",", true, "error"},
	} {
		got, err := parseRoles(c.flag, c.cluster)
		s := fmt.Sprint(got)
		if err != nil {
			s = "error"
		}
		if s != c.want {
			t.Errorf("--roles %q (cluster %v): %s %v; want %s", c.flag, c.cluster, s, err, c.want)
		}
	}
}
