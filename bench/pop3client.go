package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// pop3Client is the small RFC 1939 client the benchmarks need: USER/PASS,
// STAT, LIST, UIDL, RETR, QUIT. Lines are read with a length limit.
type pop3Client struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

const pop3MaxLine = 8192

var errPOP3 = errors.New("pop3 -ERR")

func dialPOP3(ctx context.Context, addr string) (*pop3Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c := &pop3Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriter(conn)}
	if _, err := c.status(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

func (c *pop3Client) Close() error { return c.conn.Close() }

// readLine reads one line without its CRLF (or LF).
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, frag...)
		if len(line) > pop3MaxLine {
			return nil, fmt.Errorf("pop3 line longer than %d bytes", pop3MaxLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// parseStatus splits a status line into ok and its text.
func parseStatus(line []byte) (string, error) {
	switch {
	case bytes.HasPrefix(line, []byte("+OK")):
		return strings.TrimSpace(string(line[3:])), nil
	case bytes.HasPrefix(line, []byte("-ERR")):
		return "", fmt.Errorf("%w: %s", errPOP3, strings.TrimSpace(string(line[4:])))
	default:
		return "", fmt.Errorf("pop3: bad status line %q", line)
	}
}

func (c *pop3Client) status() (string, error) {
	line, err := readLine(c.r)
	if err != nil {
		return "", err
	}
	return parseStatus(line)
}

func (c *pop3Client) cmd(format string, args ...any) (string, error) {
	fmt.Fprintf(c.w, format+"\r\n", args...)
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	return c.status()
}

// readMultiline copies a dot-terminated body to w, undoing dot-stuffing and
// writing CRLF line ends, and returns the bytes written.
func readMultiline(r *bufio.Reader, w io.Writer) (int64, error) {
	var n int64
	for {
		line, err := readLine(r)
		if err != nil {
			return n, err
		}
		if len(line) == 1 && line[0] == '.' {
			return n, nil
		}
		if len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		k, err := w.Write(append(line, '\r', '\n'))
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

func (c *pop3Client) Login(user, pass string) error {
	if _, err := c.cmd("USER %s", user); err != nil {
		return fmt.Errorf("USER: %w", err)
	}
	if _, err := c.cmd("PASS %s", pass); err != nil {
		return fmt.Errorf("PASS: %w", err)
	}
	return nil
}

// Stat returns the message count and total size.
func (c *pop3Client) Stat() (int, int64, error) {
	s, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	return parseStat(s)
}

func parseStat(s string) (int, int64, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("STAT: bad answer %q", s)
	}
	n, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || n < 0 || size < 0 {
		return 0, 0, fmt.Errorf("STAT: bad answer %q", s)
	}
	return n, size, nil
}

// listing runs LIST or UIDL and returns message number -> second field.
func (c *pop3Client) listing(cmd string) (map[int]string, error) {
	if _, err := c.cmd("%s", cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	var buf bytes.Buffer
	if _, err := readMultiline(c.r, &buf); err != nil {
		return nil, err
	}
	return parseListing(buf.Bytes())
}

func parseListing(b []byte) (map[int]string, error) {
	out := map[int]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\r\n"), "\r\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("bad listing line %q", line)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad message number in %q", line)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("message %d listed twice", n)
		}
		out[n] = f[1]
	}
	return out, nil
}

// Retr writes message n to w and returns its size with CRLF line ends.
func (c *pop3Client) Retr(n int, w io.Writer) (int64, error) {
	if _, err := c.cmd("RETR %d", n); err != nil {
		return 0, fmt.Errorf("RETR %d: %w", n, err)
	}
	return readMultiline(c.r, w)
}

func (c *pop3Client) Quit() error {
	_, err := c.cmd("QUIT")
	c.conn.Close()
	return err
}
