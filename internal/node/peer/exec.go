package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"

	"github.com/creack/pty"
)

// A command in a gear of another machine (`gantry ssh` through the
// machine the user talks to) runs on the gear's own machine; the
// cluster port carries its streams after an HTTP upgrade, in frames of a
// kind byte and a 32-bit length:
//
//	caller -> machine: stdin data, stdin closed, window size (cols, rows)
//	machine -> caller: stdout data, stderr data, exit code (the last)
const (
	frameStdin  byte = 'i'
	frameEOF    byte = 'e'
	frameResize byte = 'r'
	frameStdout byte = 'o'
	frameStderr byte = 'E'
	frameExit   byte = 'x'
)

// maxFrame bounds a frame's payload.
const maxFrame = 1 << 20

// ExecRequest is a command to run in a gear: "" for a login shell; TTY
// runs it in a terminal of Cols x Rows.
type ExecRequest struct {
	Command    string
	TTY        bool
	Term       string
	Cols, Rows int
}

// ExecIO are the caller's streams; Resize carries window changes
// (cols, rows) and may be nil. Stderr is unused with a TTY.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan [2]int
}

func writeFrame(w io.Writer, mu *sync.Mutex, kind byte, p []byte) error {
	mu.Lock()
	defer mu.Unlock()
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("a frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0], p, err
}

// frameWriter writes each Write as one frame of a kind.
type frameWriter struct {
	w    io.Writer
	mu   *sync.Mutex
	kind byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), maxFrame)
		if err := writeFrame(f.w, f.mu, f.kind, p[:n]); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return total, nil
}

// exec runs a command in a gear of this machine for another machine.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := ExecRequest{Command: q.Get("command"), TTY: q.Get("tty") == "1", Term: q.Get("term")}
	req.Cols, _ = strconv.Atoi(q.Get("cols"))
	req.Rows, _ = strconv.Atoi(q.Get("rows"))
	cmd, err := s.local.ExecGear(r.PathValue("id"), req.Command, req.TTY, req.Term)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	conn, brw, err := switchProtocols(w, "gantry-exec")
	if err != nil {
		return
	}
	defer conn.Close()
	var mu sync.Mutex
	code := s.runExec(cmd, req, brw.Reader, conn, &mu)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	writeFrame(conn, &mu, frameExit, b[:])
}

// runExec starts cmd (in a terminal when asked), feeds it the caller's
// frames and sends its output back; it returns the exit code.
func (s *Server) runExec(cmd *exec.Cmd, req ExecRequest, in *bufio.Reader, out io.Writer, mu *sync.Mutex) int {
	var stdin io.WriteCloser
	var term *os.File
	var outputs sync.WaitGroup
	if req.TTY {
		size := &pty.Winsize{Cols: uint16(max(req.Cols, 1)), Rows: uint16(max(req.Rows, 1))}
		f, err := pty.StartWithSize(cmd, size)
		if err != nil {
			fmt.Fprintf(frameWriter{out, mu, frameStderr}, "gantry: %v\n", err)
			return 1
		}
		term, stdin = f, f
		outputs.Add(1)
		go func() { defer outputs.Done(); io.Copy(frameWriter{out, mu, frameStdout}, f) }()
	} else {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return 1
		}
		cmd.Stdout, cmd.Stderr = frameWriter{out, mu, frameStdout}, frameWriter{out, mu, frameStderr}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(frameWriter{out, mu, frameStderr}, "gantry: %v\n", err)
			return 1
		}
	}
	go func() {
		for {
			kind, p, err := readFrame(in)
			if err != nil {
				// The caller went: end the command.
				if cmd.Process != nil {
					cmd.Process.Kill()
				}
				return
			}
			switch kind {
			case frameStdin:
				stdin.Write(p)
			case frameEOF:
				if term == nil {
					stdin.Close()
				} else {
					term.Write([]byte{4}) // ^D
				}
			case frameResize:
				if term != nil && len(p) == 4 {
					pty.Setsize(term, &pty.Winsize{Cols: binary.BigEndian.Uint16(p), Rows: binary.BigEndian.Uint16(p[2:])})
				}
			}
		}
	}()
	err := cmd.Wait()
	if term != nil {
		outputs.Wait() // the terminal's last output (EIO once the child is gone)
		term.Close()
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		return 1
	}
	return 0
}

// ExecGear runs a command in a gear of the machine at addr, relaying the
// caller's streams, and returns the command's exit code.
func (c *Client) ExecGear(ctx context.Context, addr, gearID string, req ExecRequest, stdio ExecIO) (int, error) {
	q := url.Values{"command": {req.Command}, "term": {req.Term}, "cols": {strconv.Itoa(req.Cols)}, "rows": {strconv.Itoa(req.Rows)}}
	if req.TTY {
		q.Set("tty", "1")
	}
	conn, err := c.upgrade(ctx, addr, "/peer/v1/gears/"+gearID+"/exec?"+q.Encode(), "gantry-exec")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var mu sync.Mutex
	done := make(chan struct{})
	defer close(done)
	go func() {
		if stdio.Stdin != nil {
			io.Copy(frameWriter{conn, &mu, frameStdin}, stdio.Stdin)
		}
		writeFrame(conn, &mu, frameEOF, nil)
	}()
	if stdio.Resize != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case s, ok := <-stdio.Resize:
					if !ok {
						return
					}
					var b [4]byte
					binary.BigEndian.PutUint16(b[:], uint16(s[0]))
					binary.BigEndian.PutUint16(b[2:], uint16(s[1]))
					writeFrame(conn, &mu, frameResize, b[:])
				}
			}
		}()
	}
	for {
		kind, p, err := readFrame(conn)
		if err != nil {
			return 0, fmt.Errorf("the machine at %s went during the command: %w", addr, err)
		}
		switch kind {
		case frameStdout:
			stdio.Stdout.Write(p)
		case frameStderr:
			if stdio.Stderr != nil {
				stdio.Stderr.Write(p)
			}
		case frameExit:
			if len(p) == 4 {
				return int(int32(binary.BigEndian.Uint32(p))), nil
			}
			return 1, nil
		}
	}
}
