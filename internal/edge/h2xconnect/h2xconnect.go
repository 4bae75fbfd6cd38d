// Package h2xconnect turns on extended CONNECT (RFC 8441, WebSockets over
// HTTP/2) in golang.org/x/net/http2, which reads it from GODEBUG once, in
// its init. Importing this package before it is enough: packages are
// initialized in the order of their import paths where dependencies allow
// (the Go specification, since Go 1.21), and this one, depending on os
// only, sorts before golang.org/x/net. TestExtendedConnect in the router
// checks that the setting is announced.
package h2xconnect

import "os"

func init() {
	v := os.Getenv("GODEBUG")
	if v != "" {
		v += ","
	}
	os.Setenv("GODEBUG", v+"http2xconnect=1")
}
