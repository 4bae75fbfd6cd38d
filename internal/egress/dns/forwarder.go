// Package egressdns is the DNS forwarder on the gear network's gateway.
// Gears of apps with hostname egress rules have their DNS sent to it (the
// gear's nftables translates port 53), so the platform sees the answers
// the app itself gets: before an answer is returned, the addresses in it
// are handed to Learn, which lets them through the app's policy. That is
// how `egress allow APP *.example.com` works for names nobody listed.
//
// It forwards over UDP and TCP to the upstream resolvers (the host's, by
// default), one upstream socket per query, and changes nothing in the
// messages.
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Answer is an address an answer gave, with its time to live.
type Answer struct {
	Addr netip.Addr
	TTL  time.Duration
}

// Options configure a Forwarder.
type Options struct {
	Addr      netip.AddrPort // where to listen (UDP and TCP)
	Upstreams []string       // HOST:PORT, tried in order
	// Learn is called with the querying address, the names of an answer
	// (the question and the CNAME chain, lower case, no final dot) and its
	// addresses, before the answer is returned to the client.
	Learn   func(src netip.Addr, names []string, answers []Answer)
	Timeout time.Duration // per upstream; default 3s
	Log     *slog.Logger
	// Listen and ListenPacket bind the sockets (default: net's); the
	// server passes its hand-off's, so a restart keeps them.
	Listen       func(network, addr string) (net.Listener, error)
	ListenPacket func(network, addr string) (net.PacketConn, error)
}

// Forwarder is the DNS forwarder.
type Forwarder struct {
	o     Options
	udp   *net.UDPConn
	tcp   *net.TCPListener
	wg    sync.WaitGroup
	conns sync.Map // *net.TCPConn being served
}

// New returns a Forwarder; Start listens.
func New(o Options) *Forwarder {
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{o: o}
}

// Upstreams reads the nameservers of a resolv.conf as HOST:53.
func Upstreams(resolvConf string) []string {
	var out []string
	for _, line := range strings.Split(resolvConf, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.Unmap(), 53).String())
			}
		}
	}
	return out
}

// Start listens on UDP and TCP and serves until ctx ends.
func (f *Forwarder) Start(ctx context.Context) error {
	if len(f.o.Upstreams) == 0 {
		return errors.New("the DNS forwarder has no upstream resolver: give --egress-dns-upstream or a nameserver in /etc/resolv.conf")
	}
	listen, listenPacket := f.o.Listen, f.o.ListenPacket
	if listen == nil {
		listen = net.Listen
	}
	if listenPacket == nil {
		listenPacket = net.ListenPacket
	}
	var u *net.UDPConn
	var ln net.Listener
	for try := 0; ; try++ {
		pc, err := listenPacket("udp", f.o.Addr.String())
		if err != nil {
			return fmt.Errorf("the DNS forwarder cannot listen on %s/udp: %w", f.o.Addr, err)
		}
		u = pc.(*net.UDPConn)
		// The same port for TCP (port 0 picks the UDP one's, which may be
		// taken for TCP: then another).
		ln, err = listen("tcp", u.LocalAddr().(*net.UDPAddr).AddrPort().String())
		if err == nil {
			break
		}
		u.Close()
		if f.o.Addr.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			return fmt.Errorf("the DNS forwarder cannot listen on %s/tcp: %w", f.o.Addr, err)
		}
	}
	t := ln.(*net.TCPListener)
	f.udp, f.tcp = u, t
	f.wg.Add(2)
	go func() { defer f.wg.Done(); f.serveUDP() }()
	go func() { defer f.wg.Done(); f.serveTCP() }()
	go func() {
		<-ctx.Done()
		u.Close()
		t.Close()
		f.conns.Range(func(k, _ any) bool { k.(*net.TCPConn).Close(); return true })
	}()
	return nil
}

// Run serves until ctx ends (a server role).
func (f *Forwarder) Run(ctx context.Context) error {
	if err := f.Start(ctx); err != nil {
		return fmt.Errorf("%w (another DNS server there? give --egress-dns-port)", err)
	}
	<-ctx.Done()
	f.Wait()
	return nil
}

// Wait returns once the listeners are closed and their queries done.
func (f *Forwarder) Wait() { f.wg.Wait() }

// Addr is the UDP address listened on.
func (f *Forwarder) Addr() netip.AddrPort { return f.udp.LocalAddr().(*net.UDPAddr).AddrPort() }

func (f *Forwarder) serveUDP() {
	for {
		buf := make([]byte, 65535)
		n, src, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			reply, err := f.exchange("udp", buf[:n])
			if err != nil {
				f.o.Log.Debug("DNS query failed", "src", src, "err", err)
				return // the client retries or times out, as with a lost packet
			}
			f.learn(src.Addr(), reply)
			f.udp.WriteToUDPAddrPort(reply, src)
		}()
	}
}

func (f *Forwarder) serveTCP() {
	for {
		c, err := f.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.conns.Store(c, nil)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.conns.Delete(c)
			defer c.Close()
			src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				q, err := readMsg(c)
				if err != nil {
					return
				}
				reply, err := f.exchange("tcp", q)
				if err != nil {
					f.o.Log.Debug("DNS query failed", "src", src, "err", err)
					return
				}
				f.learn(src.Unmap(), reply)
				if writeMsg(c, reply) != nil {
					return
				}
			}
		}()
	}
}

// exchange sends one query upstream and returns the reply, trying each
// upstream in turn.
func (f *Forwarder) exchange(network string, q []byte) ([]byte, error) {
	var last error
	for _, up := range f.o.Upstreams {
		reply, err := f.exchangeWith(network, up, q)
		if err == nil {
			return reply, nil
		}
		last = err
	}
	return nil, last
}

func (f *Forwarder) exchangeWith(network, upstream string, q []byte) ([]byte, error) {
	c, err := net.DialTimeout(network, upstream, f.o.Timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(f.o.Timeout))
	if network == "tcp" {
		if err := writeMsg(c, q); err != nil {
			return nil, err
		}
		return readMsg(c)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		// A reply to another query (a late one on a reused port) is not ours.
		if n >= 2 && len(q) >= 2 && buf[0] == q[0] && buf[1] == q[1] {
			return buf[:n], nil
		}
	}
}

// learn hands the addresses of a reply to Learn.
func (f *Forwarder) learn(src netip.Addr, reply []byte) {
	if f.o.Learn == nil {
		return
	}
	names, answers := Parse(reply)
	if len(answers) > 0 {
		f.o.Learn(src.Unmap(), names, answers)
	}
}

// Parse reads the names (the question and every CNAME in the answer) and
// the A and AAAA answers of a DNS reply. A malformed reply gives nothing.
func Parse(reply []byte) ([]string, []Answer) {
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil || h.RCode != dnsmessage.RCodeSuccess || !h.Response {
		return nil, nil
	}
	var names []string
	add := func(n dnsmessage.Name) {
		s := strings.ToLower(strings.TrimSuffix(n.String(), "."))
		for _, have := range names {
			if have == s {
				return
			}
		}
		names = append(names, s)
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, nil
	}
	for _, q := range qs {
		add(q.Name)
	}
	var answers []Answer
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			break // ErrSectionDone, or malformed: keep what was read
		}
		ttl := time.Duration(rh.TTL) * time.Second
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return names, answers
			}
			answers = append(answers, Answer{Addr: netip.AddrFrom4(r.A), TTL: ttl})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return names, answers
			}
			answers = append(answers, Answer{Addr: netip.AddrFrom16(r.AAAA).Unmap(), TTL: ttl})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return names, answers
			}
			add(rh.Name)
			add(r.CNAME)
		default:
			if p.SkipAnswer() != nil {
				return names, answers
			}
		}
	}
	return names, answers
}

// readMsg reads one length-prefixed DNS message (TCP).
func readMsg(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func writeMsg(w io.Writer, msg []byte) error {
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

// Lookup resolves a name's A and AAAA records through the upstreams, in
// order, and returns the addresses with their TTLs (which Go's resolver
// does not give): hostname rules are refreshed when their answers expire.
// A name that does not exist is an error.
func Lookup(ctx context.Context, upstreams []string, name string) ([]Answer, error) {
	fqdn, err := dnsmessage.NewName(strings.TrimSuffix(name, ".") + ".")
	if err != nil {
		return nil, fmt.Errorf("%q is not a DNS name", name)
	}
	f := &Forwarder{o: Options{Upstreams: upstreams, Timeout: 2 * time.Second}}
	if d, ok := ctx.Deadline(); ok {
		f.o.Timeout = min(f.o.Timeout, time.Until(d))
	}
	var out []Answer
	var last error
	found := false
	for _, t := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		q := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true})
		q.StartQuestions()
		q.Question(dnsmessage.Question{Name: fqdn, Type: t, Class: dnsmessage.ClassINET})
		msg, err := q.Finish()
		if err != nil {
			return nil, err
		}
		reply, err := f.exchange("udp", msg)
		if err == nil {
			var h dnsmessage.Header
			if h, err = headerOf(reply); err == nil && h.Truncated {
				reply, err = f.exchange("tcp", msg)
			}
		}
		if err != nil {
			last = err
			continue
		}
		h, _ := headerOf(reply)
		switch h.RCode {
		case dnsmessage.RCodeSuccess:
			found = true
			_, answers := Parse(reply)
			out = append(out, answers...)
		case dnsmessage.RCodeNameError:
			return nil, fmt.Errorf("%s does not exist (NXDOMAIN)", name)
		default:
			last = fmt.Errorf("%s: the resolver answered %s", name, h.RCode)
		}
	}
	if !found {
		return nil, last
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no address", name)
	}
	return out, nil
}

func headerOf(reply []byte) (dnsmessage.Header, error) {
	var p dnsmessage.Parser
	return p.Start(reply)
}
