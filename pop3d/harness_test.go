package pop3d_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/pop3d"
)

// users is the test authenticator: a fixed table of passwords whose Maildirs
// live under root. Authentication itself is auth/'s business; pop3d only
// needs the Authenticator contract.
type users struct {
	root  string
	pw    map[string]string
	unavl bool // answer ErrUnavailable, like an LDAP server that is down
}

func (u *users) identity(name string) *auth.Identity {
	return &auth.Identity{User: name, Maildir: filepath.Join(u.root, name, "Maildir"), UID: -1, GID: -1, Backend: "test"}
}

func (u *users) Authenticate(_ context.Context, name, pass string) (*auth.Identity, error) {
	if u.unavl {
		return nil, fmt.Errorf("test backend down: %w", auth.ErrUnavailable)
	}
	name = auth.Normalize(name)
	if p, ok := u.pw[name]; ok && p == pass && pass != "" {
		return u.identity(name), nil
	}
	return nil, auth.ErrInvalidCredentials
}

func (u *users) Lookup(_ context.Context, name string) (*auth.Identity, error) {
	if _, ok := u.pw[name]; ok {
		return u.identity(name), nil
	}
	return nil, auth.ErrNoSuchUser
}

// apopUsers adds APOP: it knows the plaintext passwords.
type apopUsers struct{ *users }

func (u apopUsers) AuthenticateAPOP(_ context.Context, name, timestamp, digest string) (*auth.Identity, error) {
	p, ok := u.pw[name]
	sum := md5.Sum([]byte(timestamp + p))
	if !ok || hex.EncodeToString(sum[:]) != digest {
		return nil, auth.ErrInvalidCredentials
	}
	return u.identity(name), nil
}

// env is a running pop3d on loopback over a real maildir.Store.
type env struct {
	t     testing.TB
	root  string
	users *users
	store backend.Store
	srv   *pop3d.Server
	addr  string
	logs  *testenv.LogBuffer
	tls   *tls.Config // client side, trusts the server's certificate
}

// newEnv starts a server; tweak adjusts its Options. By default plaintext
// login is allowed and loopback does not count as secure, so tests exercise
// the real rule.
func newEnv(t *testing.T, tweak func(*pop3d.Options)) *env {
	t.Helper()
	return newEnvTB(t, tweak)
}

// newEnvTB is newEnv for tests and benchmarks.
func newEnvTB(t testing.TB, tweak func(*pop3d.Options)) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, root: root, logs: &testenv.LogBuffer{},
		users: &users{root: root, pw: map[string]string{"alice": "secret", "bob": "hunter2"}}}
	e.store = maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	opts := pop3d.Options{
		Store:              e.store,
		Auth:               e.users,
		Logger:             slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AllowPlaintextAuth: true,
		IsSecure:           func(net.Conn) bool { return false },
		MarkSeen:           true,
		Hostname:           "pop.example.edu",
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := pop3d.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.addr = srv, ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != pop3d.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
		// The store measures sizes in the background: stop it before the
		// Maildir is removed.
		if err := e.store.(*maildir.Store).Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		if strings.Contains(e.logs.String(), "secret") || strings.Contains(e.logs.String(), "hunter2") {
			t.Errorf("a password reached the log:\n%s", e.logs)
		}
	})
	return e
}

// waitLog waits for a log line matching re: a session logs after its last
// answer, so the client may see the answer first.
func (e *env) waitLog(re string) {
	e.t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(5 * time.Second); !rx.MatchString(e.logs.String()); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("no log line matches %s:\n%s", re, e.logs)
		}
	}
}

// maildir returns user's Maildir path.
func (e *env) maildir(user string) string {
	return filepath.Join(e.root, user, "Maildir")
}

// deliver writes messages into user's new/ the way Postfix does: LF line
// ends, no size in the name. It returns the file names.
func (e *env) deliver(user string, msgs ...string) []string {
	e.t.Helper()
	dir := e.maildir(user)
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			e.t.Fatal(err)
		}
	}
	var names []string
	for _, m := range msgs {
		name := fmt.Sprintf("%d.V801I%xM%d.test", time.Now().Unix(), len(names)+1, time.Now().UnixNano()%1e6)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(m), 0o600); err != nil {
			e.t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// inbox opens user's INBOX through a second store handle, as another
// process (imapd, roostctl) would see it.
func (e *env) inbox(user string) *backend.Snapshot {
	e.t.Helper()
	ctx := context.Background()
	st := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	defer st.Close() // last: its measurer may still run after the mailbox is closed
	u, err := st.Open(ctx, backend.Account{Name: user, Maildir: e.maildir(user), UID: -1, GID: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	defer u.Close()
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		e.t.Fatal(err)
	}
	defer mb.Close()
	snap, err := mb.Sync(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return snap
}

// client is a raw POP3 connection for transcripts.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (e *env) dial() *client {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &client{t: e.t, conn: c, r: bufio.NewReader(c)}
}

// dialTLS connects with implicit TLS to addr.
func (e *env) dialTLS(addr string) *client {
	e.t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, e.tls)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &client{t: e.t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(lines ...string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", lines, err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "<" + err.Error() + ">"
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// run plays a transcript: "C: line" is sent (consecutive C lines in one
// write, i.e. pipelined), "S: line" must be the next line from the server;
// an S line ending in "..." matches by prefix; "S: <EOF>" expects the
// connection to close.
func (c *client) run(transcript string) {
	c.t.Helper()
	var pending []string
	for _, l := range strings.Split(strings.TrimSpace(transcript), "\n") {
		l = strings.TrimLeft(l, " \t")
		switch {
		case strings.HasPrefix(l, "C: "):
			pending = append(pending, l[3:])
			continue
		case l == "C:":
			pending = append(pending, "")
			continue
		}
		if len(pending) > 0 {
			c.send(pending...)
			pending = nil
		}
		want, ok := strings.CutPrefix(l, "S: ")
		if l == "S:" {
			want, ok = "", true
		}
		if !ok {
			c.t.Fatalf("bad transcript line %q", l)
		}
		got := c.line()
		switch {
		case want == "<EOF>":
			if got != "<EOF>" {
				c.t.Fatalf("want EOF, got %q", got)
			}
		case strings.HasSuffix(want, "..."):
			if !strings.HasPrefix(got, strings.TrimSuffix(want, "...")) {
				c.t.Fatalf("got  %q\nwant %q", got, want)
			}
		case got != want:
			c.t.Fatalf("got  %q\nwant %q", got, want)
		}
	}
	if len(pending) > 0 {
		c.send(pending...)
	}
}

// login dials and logs in as user.
func (e *env) login(user, pass string) *client {
	e.t.Helper()
	c := e.dial()
	c.run(`
		S: +OK pop.example.edu POP3 server ready...
		C: USER ` + user + `
		C: PASS ` + pass + `
		S: +OK
		S: +OK Logged in...`)
	return c
}

// selfSigned returns a server certificate for 127.0.0.1 and a client
// config that trusts it.
func selfSigned(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pop.example.edu"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"pop.example.edu"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}
