package connguard

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first n accepts with err, then accepts for real.
type flakyListener struct {
	net.Listener
	n   atomic.Int32
	err error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

func TestServeGoesOnAfterAcceptErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln, err: &net.OpError{Op: "accept", Err: syscall.EMFILE}}
	fl.n.Store(4)
	g := New(Options{Name: "test"})
	done := make(chan error, 1)
	go func() {
		done <- g.Serve(fl, "test", func(c net.Conn) { c.Write([]byte("hi")); c.Close() })
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "hi" || err != nil {
		t.Fatalf("after 4 accept errors: read %q, %v; want hi", b, err)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve after close: %v; want nil", err)
	}
}

func TestPerSourceCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := New(Options{Name: "test", PerSource: 3})
	held := make(chan net.Conn, 10)
	go g.Serve(ln, "test", func(c net.Conn) { held <- c })
	for i := 0; i < 5; i++ {
		// Over the cap the server resets the connection, which a dial may
		// already see.
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
		}
	}
	for i := 0; i < 3; i++ {
		select {
		case c := <-held:
			defer c.Close()
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d connections admitted; want 3", i)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for g.Refused() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	src := netip.MustParseAddr("127.0.0.1")
	if g.Refused() != 2 || g.Open(src) != 3 {
		t.Fatalf("refused %d, open %d; want 2 and 3", g.Refused(), g.Open(src))
	}
	select {
	case <-held:
		t.Fatal("a connection over the cap was served")
	default:
	}
}

func TestCloseFreesSlot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := New(Options{Name: "test", PerSource: 1})
	held := make(chan net.Conn, 10)
	go g.Serve(ln, "test", func(c net.Conn) { held <- c })
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case sc := <-held:
			sc.Close()
			sc.Close() // a second close frees nothing more
		case <-time.After(30 * time.Second):
			t.Fatalf("connection %d not admitted after the one before closed", i)
		}
		c.Close()
	}
	if g.Refused() != 0 || g.Open(netip.MustParseAddr("127.0.0.1")) != 0 {
		t.Fatalf("refused %d, open %d; want 0, 0", g.Refused(), g.Open(netip.MustParseAddr("127.0.0.1")))
	}
}

func TestExempt(t *testing.T) {
	g := New(Options{Name: "test", PerSource: 1, Exempt: func(a netip.Addr) bool { return a.IsLoopback() }})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, _ := ln.Accept()
		defer sc.Close()
		if _, ok := g.Admit(sc, "test"); !ok {
			t.Fatalf("exempt source refused at connection %d", i)
		}
	}
}

func TestGuardedConnsSplice(t *testing.T) {
	// Two guarded connections copy to each other through io.Copy: the
	// wrapper must pass the TCP connection on (splice), and the data must
	// arrive whole.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	g := New(Options{Name: "test", PerSource: 10})
	pair := func() (client, server net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, _ := ln.Accept()
		gs, ok := g.Admit(s, "test")
		if !ok {
			t.Fatal("not admitted")
		}
		if _, ok := gs.(*Conn); !ok {
			t.Fatalf("admitted %T; want *Conn", gs)
		}
		return c, gs
	}
	c1, s1 := pair()
	c2, s2 := pair()
	defer c1.Close()
	defer c2.Close()
	go func() { io.Copy(s2, s1); s2.(*Conn).CloseWrite() }()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i)
	}
	go func() { c1.Write(want); c1.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c2)
	if err != nil || len(got) != len(want) {
		t.Fatalf("copied %d bytes, %v; want %d", len(got), err, len(want))
	}
	if Unwrap(s1).(*net.TCPConn) == nil {
		t.Fatal("Unwrap lost the TCP connection")
	}
}

// TestServeSurvivesDescriptorExhaustion runs out of descriptors for real
// (a low RLIMIT_NOFILE for this test process): the accept loop must log,
// back off and go on, and serve again once descriptors are free.
func TestServeSurvivesDescriptorExhaustion(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := New(Options{Name: "test"})
	var served atomic.Int64
	held := make(chan net.Conn, 1000)

	// Dial first (the clients need descriptors too, and wait in the
	// backlog), then lower the limit so that the server side cannot accept
	// them all, then serve.
	var clients []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	entries, _ := os.ReadDir("/proc/self/fd")
	low := syscall.Rlimit{Cur: uint64(len(entries)) + 20, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
			restored = true
		}
	}
	defer restore()
	go g.Serve(ln, "test", func(c net.Conn) { served.Add(1); held <- c })
	deadline := time.Now().Add(30 * time.Second)
	for len(held) < 15 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the loop now meets EMFILE
	if served.Load() >= 200 {
		t.Fatalf("served all %d connections under a limit of %d descriptors: the test did not exhaust them", served.Load(), low.Cur)
	}
	restore()
	for _, c := range clients {
		defer c.Close()
	}
	for served.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if served.Load() != 200 {
		t.Fatalf("after descriptors came back: served %d of 200", served.Load())
	}
	for i := 0; i < 200; i++ {
		(<-held).Close()
	}
}
