package sshd

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"charm.land/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// ServiceDialer connects to a service of one of a user's gears (the
// agent); it refuses any other address.
type ServiceDialer interface {
	DialService(user, addr string) (net.Conn, any, error)
}

type directTCPIP struct {
	DestAddr   string
	DestPort   uint32
	OriginAddr string
	OriginPort uint32
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// forward handles a direct-tcpip channel (`gantry port-forward`, `ssh -L`):
// only to a listening service of the caller's own gears, with half-close
// passed through in both directions.
func (s *Server) forward(_ *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
	var d directTCPIP
	if err := gossh.Unmarshal(newChan.ExtraData(), &d); err != nil {
		newChan.Reject(gossh.ConnectionFailed, "malformed forward request")
		return
	}
	addr := net.JoinHostPort(d.DestAddr, strconv.Itoa(int(d.DestPort)))
	if s.o.Refuse != "" {
		newChan.Reject(gossh.Prohibited, "gantry: "+s.o.Refuse)
		return
	}
	user, ok := s.userOfKey(ctx)
	if !ok || s.o.Services == nil {
		newChan.Reject(gossh.Prohibited, "port forwarding is not available")
		return
	}
	target, _, err := s.o.Services.DialService(user, addr)
	if err != nil {
		if s.forwardLimit.allow() {
			s.log.Warn("refused forward", "user", user, "dest", addr, "err", err)
		}
		newChan.Reject(gossh.Prohibited, fmt.Sprintf("gantry: %v", err))
		return
	}
	ch, reqs, err := newChan.Accept()
	if err != nil {
		target.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	s.log.Debug("forward", "user", user, "dest", addr)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client -> service; then half-close the service's read side
		defer wg.Done()
		pipe(target, ch)
		if tc, ok := target.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
	}()
	go func() { // service -> client; then EOF to the client
		defer wg.Done()
		pipe(ch, target)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	target.Close()
}

func pipe(dst io.Writer, src io.Reader) {
	buf := copyBufs.Get().(*[]byte)
	io.CopyBuffer(dst, src, *buf)
	copyBufs.Put(buf)
}

// userOfKey is the user of the key that authenticated the connection.
func (s *Server) userOfKey(ctx ssh.Context) (string, bool) {
	pk, _ := ctx.Value(ssh.ContextKeyPublicKey).(gossh.PublicKey)
	if pk == nil {
		return "", false
	}
	return s.userByKey(pk)
}
