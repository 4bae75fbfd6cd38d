package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// protoResult is one protocol's figures through one proxy.
type protoResult struct {
	proto         string
	rps, p50, p99 float64 // requests/s, ms
	cpuPerReq     float64 // µs of the proxy's CPU per request
	err           string
}

// protocols measures HTTPS by protocol through the proxies that speak
// HTTP/3 (Gantry, Caddy): HTTP/2 and HTTP/3, each with Go clients
// (net/http's h2, quic-go's h3), 16 streams over one connection, on the
// load generator's core; the proxy's CPU per request is the figure that
// compares them (the clients bound the request rate).
func protocols(p *proxy) []protoResult {
	tc := &tls.Config{InsecureSkipVerify: true}
	h2 := &http2.Transport{TLSClientConfig: tc, DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", p.tls)
	}}
	h3 := &http3.Transport{TLSClientConfig: tc, Dial: func(ctx context.Context, _ string, cfg *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		return quic.DialAddr(ctx, p.tls, cfg, qc)
	}}
	defer h3.Close()
	var out []protoResult
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{{"HTTP/2", h2}, {"HTTP/3", h3}} {
		r := protoResult{proto: c.name}
		rps, p50, p99, cpu, err := goLoad(p, c.rt, 16, *dur)
		if err != nil {
			r.err = err.Error()
		} else {
			r.rps, r.p50, r.p99, r.cpuPerReq = rps, p50, p99, cpu
		}
		out = append(out, r)
		fmt.Printf("  %s %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %.1f µs CPU per request %s\n", p.name, c.name, r.rps, r.p50, r.p99, r.cpuPerReq, r.err)
	}
	return out
}

// goLoad sends GET / from n goroutines for d and returns the rate, the
// latency quantiles and the proxy's CPU per request.
func goLoad(p *proxy, rt http.RoundTripper, n int, d time.Duration) (rps, p50, p99, cpuPerReq float64, err error) {
	cl := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	get := func() (time.Duration, error) {
		start := time.Now()
		resp, err := cl.Get("https://127.0.0.1/")
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	if _, err := get(); err != nil { // the connection, and a check
		return 0, 0, 0, 0, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	cpu0 := cpuTime(p.cmd.Process.Pid)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Since(start) < d {
				l, err := get()
				if err != nil {
					failed.Add(1)
					continue
				}
				mine = append(mine, l)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	cpu := cpuTime(p.cmd.Process.Pid) - cpu0
	if len(lat) == 0 {
		return 0, 0, 0, 0, fmt.Errorf("no request went through (%d failed)", failed.Load())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return float64(len(lat)) / took.Seconds(), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]),
		float64(cpu.Microseconds()) / float64(len(lat)), nil
}

// h2IdleDial opens an HTTP/2 connection as a browser leaves one: TLS with
// ALPN h2, the preface and SETTINGS, one GET answered in full, SETTINGS
// acknowledged; then nothing.
func h2IdleDial(addr string) (net.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		c.Close()
		return nil, fmt.Errorf("ALPN gave %q, not h2", p)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", addr}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err == nil {
		err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
	}
	for err == nil {
		var f http2.Frame
		if f, err = fr.ReadFrame(); err != nil {
			break
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			err = fr.WriteSettingsAck()
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			return c, nil // END_STREAM: the same bit on DATA and HEADERS
		}
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			err = fmt.Errorf("the request was reset")
		}
	}
	c.Close()
	return nil, err
}
