package pop3d_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/pop3d"
)

// fillMaildir writes n small messages into user's cur/ the way Dovecot
// leaves them (",S=" and ",W=" sizes in the name, :2,S flags).
func fillMaildir(tb testing.TB, dir string, n int) {
	tb.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range n {
		body := fmt.Sprintf("From: sender%d@example.edu\nSubject: message %d\n\nbody of message %d\n", i, i, i)
		lines := strings.Count(body, "\n")
		name := fmt.Sprintf("%d.M%dP1.bench,S=%d,W=%d:2,S", 1700000000+i/100, i, len(body), len(body)+lines)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// statUIDL runs one login + STAT + UIDL + QUIT over c and returns the
// number of UIDL lines.
func statUIDL(tb testing.TB, addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("USER alice\r\nPASS secret\r\nSTAT\r\nUIDL\r\nQUIT\r\n"))
	return countUIDL(tb, c)
}

// countUIDL reads a pipelined session's answers up to QUIT's and counts
// the UIDL lines (the only lines that start with a digit).
func countUIDL(tb testing.TB, r io.Reader) int {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		l, err := br.ReadSlice('\n')
		if err != nil {
			tb.Fatalf("session ended early after %d UIDL lines: %v", n, err)
		}
		switch {
		case bytes.HasPrefix(l, []byte("-ERR")):
			tb.Fatalf("server: %s", l)
		case bytes.HasPrefix(l, []byte("+OK Bye")), bytes.HasPrefix(l, []byte("+OK Logging out")):
			return n
		case l[0] >= '0' && l[0] <= '9':
			n++
		}
	}
}

// BenchmarkMaildrop100k: login + STAT + UIDL + QUIT on a 100,000-message
// INBOX, Roost and (if installed) Debian's Dovecot pop3 on the same Maildir.
// Dovecot runs pre-authenticated over a pipe, so its time includes process
// start but no login; Roost's includes TCP and USER/PASS.
func BenchmarkMaildrop100k(b *testing.B) {
	const n = 100000
	e := newEnvTB(b, nil)
	fillMaildir(b, e.maildir("alice"), n)
	b.Run("roost", func(b *testing.B) {
		if got := statUIDL(b, e.addr); got != n { // first login writes the uidlist
			b.Fatalf("%d UIDLs, want %d", got, n)
		}
		for b.Loop() {
			statUIDL(b, e.addr)
		}
	})
	b.Run("dovecot", func(b *testing.B) {
		bin := testenv.Require(b, dovecotPOP3, "dovecot-pop3d")
		run := e.dovecotCmd(bin, "alice")
		if got := countUIDL(b, run()); got != n { // builds Dovecot's index
			b.Fatalf("%d UIDLs, want %d", got, n)
		}
		for b.Loop() {
			countUIDL(b, run())
		}
	})
	// A migrated INBOX: every record gets an O field, the reverse of UID
	// order, so the maildrop is sorted at every login.
	b.Run("roost-pop3-order", func(b *testing.B) {
		statUIDL(b, e.addr) // the uidlist exists after a login
		path := filepath.Join(e.maildir("alice"), "dovecot-uidlist")
		ul, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		lines := strings.SplitAfter(string(ul), "\n")
		var out strings.Builder
		out.WriteString(lines[0])
		for i, l := range lines[1:] {
			if uid, rest, ok := strings.Cut(l, " "); ok {
				fmt.Fprintf(&out, "%s O%d %s", uid, n-i, rest)
			}
		}
		if err := os.WriteFile(path, []byte(out.String()), 0o600); err != nil {
			b.Fatal(err)
		}
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		// Message 1 is now UID 100000, message 100000 UID 1.
		c := &client{t: b, conn: conn, r: bufio.NewReader(conn)}
		c.run(`
			S: +OK...
			C: USER alice
			C: PASS secret
			C: UIDL 1
			C: UIDL ` + fmt.Sprint(n) + `
			C: QUIT
			S: +OK
			S: +OK Logged in...
			S: +OK 1 ` + fmt.Sprintf("%08x", n) + `...
			S: +OK 100000 00000001...
			S: +OK...`)
		for b.Loop() {
			statUIDL(b, e.addr)
		}
	})
}

// dovecotCmd prepares a Dovecot pop3 process on user's Maildir; each call
// of the result runs one pipelined STAT + UIDL + QUIT and returns its output.
func (e *env) dovecotCmd(bin, user string) func() io.Reader {
	conf := e.dovecotConf(user)
	return func() io.Reader {
		cmd := exec.Command(bin, "-c", conf)
		cmd.Env = []string{"USER=" + user, "HOME=" + filepath.Dir(e.maildir(user))}
		cmd.Stdin = strings.NewReader("STAT\r\nUIDL\r\nQUIT\r\n")
		out, err := cmd.Output()
		if err != nil {
			e.t.Fatalf("dovecot pop3: %v", err)
		}
		return bytes.NewReader(out)
	}
}

// BenchmarkRETR50MB compares RETR of a 50 MB message with LF line ends
// (as Postfix writes them) over loopback with copying the same file to a
// socket with cat(1), the baseline. Each sub-benchmark alternates
// its variant with cat, one transfer each per iteration, so the ratio
// compares like with like on a busy machine:
//
//   - pop3-retr: what the store's OpenMessage streams (CRLF already),
//     dot-stuffed
//   - pop3-retr-raw: the file as stored, converted to CRLF while
//     dot-stuffing (what RETR does when the store offers OpenRawMessage)
//   - pop3-retr-crlf-file: a CRLF copy of the file, nothing to convert
//   - sendfile-to-socket: Go's io.Copy from the file (sendfile(2))
//
// x-cat is the variant's speed over cat's, from the medians (1 = as fast;
// higher is faster); MB/s counts the file's octets. ns/op is one transfer
// of each.
func BenchmarkRETR50MB(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("From: big@example.edu\nSubject: big\n\n")
	line := strings.Repeat("abcdefghij", 7) + "\n"
	for i := 0; msg.Len() < 50<<20; i++ {
		if i%100 == 0 {
			msg.WriteString(".dot line needs stuffing\n")
		}
		msg.WriteString(line)
	}
	size := int64(msg.Len())
	wire := size + int64(bytes.Count(msg.Bytes(), []byte("\n"))) + int64(bytes.Count(msg.Bytes(), []byte("\n.")))
	dir := b.TempDir()
	path, crlfPath := filepath.Join(dir, "big"), filepath.Join(dir, "big.crlf")
	if err := os.WriteFile(path, msg.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(crlfPath, bytes.ReplaceAll(msg.Bytes(), []byte("\n"), []byte("\r\n")), 0o644); err != nil {
		b.Fatal(err)
	}
	// Each server has its own Maildir (a POP3 session locks one), holding
	// a link to the file.
	retrFrom := func(tweak func(*pop3d.Options)) func() {
		e := newEnvTB(b, tweak)
		fillMaildir(b, e.maildir("alice"), 0)
		if err := os.Link(path, filepath.Join(e.maildir("alice"), "new", "1700000000.V1I1M1.big")); err != nil {
			b.Fatal(err)
		}
		return retrClient(b, e.addr, wire)
	}
	catBin := testenv.Require(b, "cat", "coreutils")
	variants := []struct {
		name string
		run  func()
	}{
		{name: "cat", run: sendClient(b, size, func(c net.Conn) {
			f, err := c.(*net.TCPConn).File()
			if err != nil {
				return
			}
			defer f.Close()
			cmd := exec.Command(catBin, path)
			cmd.Stdout = f
			cmd.Run()
		})},
		{name: "pop3-retr", run: retrFrom(nil)}, // the file as stored, converted while dot-stuffing
		{name: "pop3-retr-store-crlf", run: retrFrom(func(o *pop3d.Options) { o.Store = convertingStore{o.Store} })},
		{name: "pop3-retr-crlf-file", run: retrFrom(func(o *pop3d.Options) { o.Store = oneFileStore{o.Store, crlfPath} })},
		{name: "sendfile-to-socket", run: sendClient(b, size, func(c net.Conn) {
			if f, err := os.Open(path); err == nil {
				io.Copy(c, f)
				f.Close()
			}
		})},
	}
	cat, variants := variants[0], variants[1:]
	median := func(d []time.Duration) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2].Seconds()
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var tookCat, took []time.Duration
			for b.Loop() {
				start := time.Now()
				cat.run()
				tookCat = append(tookCat, time.Since(start))
				start = time.Now()
				v.run()
				took = append(took, time.Since(start))
			}
			b.ReportMetric(float64(size)/1e6/median(took), "MB/s")
			b.ReportMetric(float64(size)/1e6/median(tookCat), "cat-MB/s")
			b.ReportMetric(median(tookCat)/median(took), "x-cat")
		})
	}
}

// sendClient starts a server that runs send on each connection and then
// closes it; each call of the result reads all of one connection and
// checks that it was size bytes.
func sendClient(b *testing.B, size int64, send func(net.Conn)) func() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			send(c)
			c.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	return func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
		c.Close()
		if n != size {
			b.Fatalf("got %d bytes, want %d", n, size)
		}
	}
}

// retrClient logs in to addr; each call of the result retrieves message 1
// and checks that the response (status line and final "." included) was
// wire octets.
func retrClient(b *testing.B, addr string, wire int64) func() {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	br := bufio.NewReaderSize(c, 64<<10)
	fmt.Fprintf(c, "USER alice\r\nPASS secret\r\n")
	for range 3 {
		if l, err := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
			b.Fatalf("login: %q %v", l, err)
		}
	}
	buf := make([]byte, 64<<10)
	return func() {
		fmt.Fprintf(c, "RETR 1\r\n")
		status, err := br.ReadString('\n')
		if !strings.HasPrefix(status, "+OK") {
			b.Fatalf("RETR: %q %v", status, err)
		}
		if n := readUntil(b, br, buf, []byte("\r\n.\r\n")); n != wire+3 {
			b.Fatalf("RETR sent %d octets, want %d", n, wire+3)
		}
	}
}

// oneFileStore serves every message from one file as is, bypassing the
// store's reader; everything else is the real store.
type oneFileStore struct {
	backend.Store
	path string
}

type oneFileUser struct {
	backend.User
	path string
}

type oneFileMailbox struct {
	backend.Mailbox
	path string
}

func (s oneFileStore) Open(ctx context.Context, acct backend.Account) (backend.User, error) {
	u, err := s.Store.Open(ctx, acct)
	return oneFileUser{u, s.path}, err
}

func (u oneFileUser) OpenMailbox(ctx context.Context, name string) (backend.Mailbox, error) {
	mb, err := u.User.OpenMailbox(ctx, name)
	return oneFileMailbox{mb, u.path}, err
}

func (m oneFileMailbox) OpenMessage(context.Context, backend.UID) (io.ReadCloser, error) {
	return os.Open(m.path)
}

// readUntil reads r until the data seen ends with end, without keeping
// (or allocating for) what it read, and returns the number of octets.
func readUntil(tb testing.TB, r io.Reader, buf, end []byte) int64 {
	tail := make([]byte, 0, 2*len(end)+len(buf))
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if n >= len(end) {
			tail = append(tail[:0], buf[n-len(end):n]...)
		} else {
			tail = append(tail, buf[:n]...)
			tail = append(tail[:0], tail[max(len(tail)-len(end), 0):]...)
		}
		if bytes.Equal(tail, end) {
			return total
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkIdleSessionMemory reports what one connected, idle session costs
// the server (heap plus goroutine stacks), from 500 sessions that have
// logged in and wait for their next command.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 500
	e := newEnvTB(b, nil)
	for i := range n {
		e.users.pw[fmt.Sprintf("u%d", i)] = "pw"
		fillMaildir(b, e.maildir(fmt.Sprintf("u%d", i)), 1)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, 0, n)
		for i := range n {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
			fmt.Fprintf(c, "USER u%d\r\nPASS pw\r\n", i)
			br := bufio.NewReader(c)
			for range 3 {
				if _, err := br.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		stack := float64(after.StackInuse) - float64(before.StackInuse)
		b.ReportMetric(heap/n, "heap-B/session")
		b.ReportMetric(stack/n, "stack-B/session")
		for _, c := range conns {
			c.Close()
		}
	}
}
