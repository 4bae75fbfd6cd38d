// Package dnstest is an authoritative DNS server for tests: it answers A
// queries from a table over UDP and TCP on loopback, with CNAMEs, and
// NXDOMAIN for names it does not know.
package dnstest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// Server answers from Records: a name ("api.example.test", or
// "*.example.test" for every name under it) to addresses, to "txt:TEXT"
// records (TXT queries), or to "cname:OTHER".
type Server struct {
	Records map[string][]string
	// TTL of the answers; set it with SetTTL while the server runs.
	TTL     uint32
	Addr    string // HOST:PORT, UDP and TCP
	Queries atomic.Int64
	mu      sync.Mutex
	udp     net.PacketConn
	tcp     net.Listener
}

// Start serves on a free loopback port until Close.
func Start(records map[string][]string) (*Server, error) {
	s := &Server{Records: records, TTL: 60}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenPacket("udp", tcp.Addr().String())
	if err != nil {
		tcp.Close()
		return nil, err
	}
	s.tcp, s.udp, s.Addr = tcp, udp, tcp.Addr().String()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply := s.answer(buf[:n]); reply != nil {
				udp.WriteTo(reply, from)
			}
		}
	}()
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var n [2]byte
					if _, err := io.ReadFull(c, n[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(n[:]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					reply := s.answer(q)
					out := binary.BigEndian.AppendUint16(nil, uint16(len(reply)))
					c.Write(append(out, reply...))
				}
			}()
		}
	}()
	return s, nil
}

// SetTTL changes the answers' TTL while the server runs.
func (s *Server) SetTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.TTL = ttl
}

// Set changes a name's answer while the server runs.
func (s *Server) Set(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Records[name] = values
}

// Close stops the server.
func (s *Server) Close() { s.udp.Close(); s.tcp.Close() }

func (s *Server) lookup(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.Records[name]; ok {
		return v
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
		if v, ok := s.Records["*."+rest]; ok {
			return v
		}
	}
}

func (s *Server) answer(q []byte) []byte {
	s.Queries.Add(1)
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	m.Header.Response, m.Header.Authoritative = true, true
	question := m.Questions[0]
	s.mu.Lock()
	ttl := s.TTL
	s.mu.Unlock()
	name := strings.ToLower(strings.TrimSuffix(question.Name.String(), "."))
	found := false
	for hops := 0; hops < 8; hops++ {
		vals := s.lookup(name)
		if vals == nil {
			break
		}
		found = true
		owner := dnsmessage.MustNewName(name + ".")
		if len(vals) == 1 && strings.HasPrefix(vals[0], "cname:") {
			name = strings.TrimPrefix(vals[0], "cname:")
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: owner, Class: dnsmessage.ClassINET, TTL: ttl},
				Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(name + ".")}})
			continue
		}
		for _, v := range vals {
			h := dnsmessage.ResourceHeader{Name: owner, Class: dnsmessage.ClassINET, TTL: ttl}
			if txt, ok := strings.CutPrefix(v, "txt:"); ok {
				if question.Type == dnsmessage.TypeTXT {
					m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.TXTResource{TXT: []string{txt}}})
				}
				continue
			}
			a, err := netip.ParseAddr(v)
			if err != nil {
				continue
			}
			switch {
			case a.Is4() && question.Type == dnsmessage.TypeA:
				m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
			case a.Is6() && question.Type == dnsmessage.TypeAAAA:
				m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
		break
	}
	if !found {
		m.Header.RCode = dnsmessage.RCodeNameError
	}
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}
