package backup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SaveRedis writes a Redis server's RDB (a consistent point-in-time copy,
// what it sends a replica) into file, reached at addr with its password.
func SaveRedis(ctx context.Context, addr, password, file string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "--no-auth-warning", "--rdb", file)
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+password)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --rdb: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// LoadRedis puts an RDB's contents into a running Redis server in one
// transaction (MULTI: FLUSHALL, then RESTORE of every key with its TTL), so
// its clients see the old data or the new, never a mix. The RDB is read
// by a Redis server of its own, on a Unix socket in a scratch directory.
func LoadRedis(ctx context.Context, rdb, addr, password string) error {
	dir, err := os.MkdirTemp(filepath.Dir(rdb), "redis-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Link(rdb, filepath.Join(dir, "dump.rdb")); err != nil {
		return err
	}
	// A socket path is short (108 bytes): its own directory in /tmp.
	sockDir, err := os.MkdirTemp("", "gantry-redis-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	cmd := exec.CommandContext(ctx, "redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--dir", dir, "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting a Redis server to read the snapshot: %w", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var from *respConn
	for i := 0; ; i++ {
		if from, err = dialResp(ctx, "unix", sock); err == nil {
			if _, err = from.do("PING"); err == nil {
				break
			}
			from.Close()
		}
		if i == 200 {
			return fmt.Errorf("the Redis server reading the snapshot did not start: %v: %s", err, log.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	defer from.Close()
	to, err := dialResp(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer to.Close()
	if _, err := to.do("AUTH", password); err != nil {
		return fmt.Errorf("the app's Redis refused its password: %w", err)
	}
	info, err := from.do("INFO", "keyspace")
	if err != nil {
		return err
	}
	// Queue the whole state, then apply it at once.
	if err := to.send("MULTI"); err != nil {
		return err
	}
	sent := 1
	to.send("FLUSHALL")
	sent++
	for _, line := range strings.Split(fmt.Sprint(info), "\n") {
		db, ok := strings.CutPrefix(strings.SplitN(line, ":", 2)[0], "db")
		if !ok {
			continue
		}
		if _, err := from.do("SELECT", db); err != nil {
			return err
		}
		to.send("SELECT", db)
		sent++
		cursor := "0"
		for {
			r, err := from.do("SCAN", cursor, "COUNT", "1000")
			if err != nil {
				return err
			}
			page, _ := r.([]any)
			if len(page) != 2 {
				return errors.New("an unexpected SCAN reply")
			}
			cursor = fmt.Sprint(page[0])
			keys, _ := page[1].([]any)
			for _, k := range keys {
				key := fmt.Sprint(k)
				dump, err := from.do("DUMP", key)
				if err != nil {
					return err
				}
				ttl, err := from.do("PTTL", key)
				if err != nil {
					return err
				}
				ms, _ := ttl.(int64)
				if dump == nil || ms == -2 {
					continue // gone meanwhile
				}
				to.send("RESTORE", key, strconv.FormatInt(max(ms, 0), 10), fmt.Sprint(dump), "REPLACE")
				sent++
			}
			if cursor == "0" {
				break
			}
		}
	}
	to.send("EXEC")
	sent++
	if err := to.w.Flush(); err != nil {
		return err
	}
	var last any
	for i := 0; i < sent; i++ {
		if last, err = to.read(); err != nil {
			return fmt.Errorf("loading the snapshot into the app's Redis: %w", err)
		}
	}
	if results, ok := last.([]any); ok {
		for _, r := range results {
			if e, bad := r.(respError); bad {
				return fmt.Errorf("loading the snapshot into the app's Redis: %s", string(e))
			}
		}
	} else {
		return errors.New("loading the snapshot into the app's Redis: the transaction was aborted")
	}
	return nil
}

// respConn speaks RESP (Redis's protocol) for the handful of commands a
// restore needs: values are binary-safe strings.
type respConn struct {
	net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

type respError string

func (e respError) Error() string { return string(e) }

func dialResp(ctx context.Context, network, addr string) (*respConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &respConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}, nil
}

func (c *respConn) send(args ...string) error {
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n", len(a))
		c.w.WriteString(a)
		c.w.WriteString("\r\n")
	}
	return nil
}

func (c *respConn) do(args ...string) (any, error) {
	c.send(args...)
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	v, err := c.read()
	if e, ok := v.(respError); ok && err == nil {
		return nil, e
	}
	return v, err
}

// read reads one reply: a string, an int64, nil, a respError or a []any.
func (c *respConn) read() (any, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("an empty Redis reply")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return respError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return nil, err
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = c.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("an unexpected Redis reply %q", line)
}
