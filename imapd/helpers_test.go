package imapd_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
)

// testServer is a real imapd on loopback over a maildir store in a
// temporary directory, with users alice and bob in a passwd-file.
type testServer struct {
	srv  *imapd.Server
	addr string
	root string // mail root: <root>/<user>/Maildir
	logs *testenv.LogBuffer
	dir  string // holds root and the users file
	stop func() // shuts the server down and closes its store
}

const (
	alicePass = "alice-secret"
	bobPass   = "bob-secret"
)

func newTestServer(t testing.TB, tweak func(*imapd.Options)) *testServer {
	t.Helper()
	return newTestServerIn(t, t.TempDir(), tweak)
}

// newTestServerIn is newTestServer on the mail and users of dir, which
// may hold those of a server that ran before (restart tests).
func newTestServerIn(t testing.TB, dir string, tweak func(*imapd.Options)) *testServer {
	t.Helper()
	root := filepath.Join(dir, "mail")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}"+alicePass+"::::::\nbob:{PLAIN}"+bobPass+"::::::userdb_quota_rule=*:storage=2K\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fa, err := fileauth.New(fileauth.Options{Path: users})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	opts := imapd.Options{
		Store:              maildir.New(maildir.Options{}),
		Auth:               auth.WithDefaults(fa, auth.Defaults{MailRoot: root}),
		Logger:             slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AllowPlaintextAuth: true,
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := imapd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		// The store's background size measurer may still write to the
		// Maildir: stop it before the temporary directory goes.
		if c, ok := opts.Store.(io.Closer); ok {
			c.Close()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), root: root, logs: logs, dir: dir, stop: stop}
}

// restart stops the server (as SIGTERM does) and starts a new one, with a
// new store, on the same mail and users.
func (ts *testServer) restart(t testing.TB, tweak func(*imapd.Options)) *testServer {
	t.Helper()
	ts.stop()
	return newTestServerIn(t, ts.dir, tweak)
}

func (ts *testServer) maildir(user string) string { return filepath.Join(ts.root, user, "Maildir") }

// login returns a logged-in go-imap client for user.
func (ts *testServer) login(t testing.TB, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pass := map[string]string{"alice": alicePass, "bob": bobPass}[user]
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// deliver writes msg (LF line endings, as Postfix writes) into user's
// Maildir new/ the way Postfix does: tmp/ first, then rename.
func (ts *testServer) deliver(t testing.TB, user, folder, msg string) {
	t.Helper()
	dir := ts.maildir(user)
	if folder != "" {
		dir = filepath.Join(dir, "."+folder)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("%d.M%dP%d.test", time.Now().Unix(), time.Now().UnixNano(), os.Getpid())
	tmp := filepath.Join(dir, "tmp", name)
	if err := os.WriteFile(tmp, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		t.Fatal(err)
	}
}

// raw is a line-level IMAP client for transcript tests.
type raw struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
	n  int
}

func (ts *testServer) raw(t testing.TB) *raw {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	r.line() // greeting
	return r
}

// line reads one response line, without CRLF.
func (r *raw) line() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (r *raw) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// cmd sends a tagged command and returns every line up to and including
// the tagged response, literals inlined.
func (r *raw) cmd(command string) []string {
	r.t.Helper()
	r.n++
	tag := fmt.Sprintf("t%d", r.n)
	r.send(tag + " " + command + "\r\n")
	return r.until(tag)
}

func (r *raw) until(tag string) []string {
	r.t.Helper()
	var lines []string
	for {
		l := r.line()
		for strings.HasSuffix(l, "}") { // literal
			i := strings.LastIndexByte(l, '{')
			var n int
			fmt.Sscanf(strings.TrimSuffix(l[i+1:], "+"), "%d}", &n)
			buf := make([]byte, n)
			if _, err := ioReadFull(r.br, buf); err != nil {
				r.t.Fatal(err)
			}
			l += string(buf) + r.line()
		}
		lines = append(lines, l)
		if strings.HasPrefix(l, tag+" ") {
			return lines
		}
	}
}

// last returns the tagged response of lines.
func last(lines []string) string { return lines[len(lines)-1] }

func (r *raw) login(user, pass string) {
	r.t.Helper()
	if l := last(r.cmd("LOGIN " + user + " " + pass)); !strings.Contains(l, "OK") {
		r.t.Fatalf("login: %s", l)
	}
}

// tlsInbox serves ts on an implicit-TLS listener and returns a client
// logged in as alice with INBOX selected, closed when t ends.
func (ts *testServer) tlsInbox(t *testing.T) *imapclient.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.srv.ServeTLS(ln)
	c, err := imapclient.DialTLS(ln.Addr().String(), &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", alicePass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}
