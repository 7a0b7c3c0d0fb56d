package lmtp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/lmtp"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/quota"
)

// testEnv is a real lmtp server on a unix socket and a TCP loopback port,
// over a passwd-file and Maildirs in a temporary directory.
type testEnv struct {
	root   string
	store  backend.Store
	auth   auth.Authenticator
	policy *quota.Policy
	socket string
	tcp    string
}

// users is the passwd-file of every test: alice with a 20000-byte limit,
// bob unlimited, carol with the default (1 MiB), dave with 100000 bytes;
// b0 to b7 (unlimited) for the benchmark.
const users = `alice:{PLAIN}pw::::::userdb_quota_rule=*:bytes=20000
bob:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
carol@example.edu:{PLAIN}pw
dave:{PLAIN}pw::::::userdb_quota_rule=*:bytes=100000
b0:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b1:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b2:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b3:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b4:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b5:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b6:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
b7:{PLAIN}pw::::::userdb_quota_rule=*:bytes=0
`

func newEnv(t *testing.T, qopts quota.Options, mod func(*lmtp.Options)) *testEnv {
	return newEnvTB(t, qopts, mod)
}

func newEnvTB(t testing.TB, qopts quota.Options, mod func(*lmtp.Options)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{root: filepath.Join(dir, "mail")}
	pw := filepath.Join(dir, "users")
	if err := os.WriteFile(pw, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	fa, err := fileauth.New(fileauth.Options{Path: pw})
	if err != nil {
		t.Fatal(err)
	}
	e.auth = auth.WithDefaults(fa, auth.Defaults{MailRoot: e.root, QuotaBytes: 1 << 20})
	e.store = maildir.New(maildir.Options{Fsync: true, GracePercent: qopts.GracePercent})
	if e.policy, err = quota.New(qopts); err != nil {
		t.Fatal(err)
	}
	opts := lmtp.Options{Auth: e.auth, Store: e.store, Quota: e.policy, Hostname: "mx.test",
		RecipientDelimiter: "+", DetailFolders: true, SpoolDir: dir, LocalDomains: []string{"mx.test"}}
	if mod != nil {
		mod(&opts)
	}
	e.socket, e.tcp = serve(t, opts)
	return e
}

// serve runs a server with opts on a new unix socket and TCP port until the
// test ends.
func serve(t testing.TB, opts lmtp.Options) (socket, tcp string) {
	t.Helper()
	srv, err := lmtp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// A short path: unix socket names are limited to ~107 bytes.
	sockDir, err := os.MkdirTemp("", "lmtp")
	if err != nil {
		t.Fatal(err)
	}
	socket = filepath.Join(sockDir, "s")
	ul, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ul) }()
	go func() { done <- srv.Serve(tl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
		os.RemoveAll(sockDir)
	})
	return socket, tl.Addr().String()
}

func (e *testEnv) dial(t *testing.T, network string) *smtp.Client {
	t.Helper()
	addr := e.socket
	if network == "tcp" {
		addr = e.tcp
	}
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	if err := c.Hello("postfix.test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send runs one transaction and returns the reply per accepted recipient,
// and the RCPT errors of refused ones.
func send(t *testing.T, c *smtp.Client, from string, size int64, rcpts []string, msg string) (data map[string]*smtp.SMTPError, rcptErrs map[string]*smtp.SMTPError) {
	t.Helper()
	var mo *smtp.MailOptions
	if size > 0 {
		mo = &smtp.MailOptions{Size: size}
	}
	if err := c.Mail(from, mo); err != nil {
		t.Fatal(err)
	}
	rcptErrs = map[string]*smtp.SMTPError{}
	accepted := 0
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("RCPT %s: %v", r, err)
			}
			rcptErrs[r] = se
			continue
		}
		accepted++
	}
	data = map[string]*smtp.SMTPError{}
	if accepted == 0 {
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
		return data, rcptErrs
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if err != nil && !errors.As(err, &lerr) {
		t.Fatalf("DATA: %v", err)
	}
	for r, d := range resp {
		data[r] = &smtp.SMTPError{Code: 250, Message: d.StatusText}
	}
	for r, se := range lerr {
		data[r] = se
	}
	return data, rcptErrs
}

// message is a test message with a body of about bodyBytes in 78-octet lines.
func message(id string, bodyBytes int) string {
	return fmt.Sprintf("From: sender@example.org\r\nTo: someone\r\nSubject: test %s\r\nMessage-ID: <%s>\r\n\r\n%sEND\r\n",
		id, id, strings.Repeat(strings.Repeat("x", 76)+"\r\n", bodyBytes/78))
}

// stored returns the messages of user's mailbox with their headers.
func (e *testEnv) stored(t *testing.T, user, mailbox string) []storedMsg {
	t.Helper()
	ctx := context.Background()
	id, err := e.auth.Lookup(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := e.policy.Account(id, false)
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.store.Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	mb, err := u.OpenMailbox(ctx, mailbox)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	snap, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	for _, m := range snap.Messages() {
		rc, err := mb.OpenMessage(ctx, m.UID)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(body)) != m.Size {
			t.Errorf("UID %d: Size %d but %d octets read", m.UID, m.Size, len(body))
		}
		hdr, err := textproto.NewReader(bufio.NewReader(strings.NewReader(string(body)))).ReadMIMEHeader()
		if err != nil {
			t.Fatalf("UID %d: header: %v", m.UID, err)
		}
		out = append(out, storedMsg{uid: m.UID, size: m.Size, header: hdr, raw: string(body)})
	}
	return out
}

type storedMsg struct {
	uid    backend.UID
	size   int64
	header textproto.MIMEHeader
	raw    string
}

func TestDeliverPerRecipient(t *testing.T) {
	e := newEnv(t, quota.Options{}, nil)
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c := e.dial(t, network)
			id := "m1-" + network + "@example.org"
			data, rcptErrs := send(t, c, "sender@example.org", 0,
				[]string{"alice@mx.test", "nobody@example.edu", "carol@example.edu"}, message(id, 100))
			if se := rcptErrs["nobody@example.edu"]; se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
				t.Errorf("unknown recipient: got %v, want 550 5.1.1", se)
			}
			for _, r := range []string{"alice@mx.test", "carol@example.edu"} {
				if d := data[r]; d == nil || d.Code != 250 || !strings.Contains(d.Message, "Saved UID") {
					t.Errorf("%s: DATA reply %+v, want 250 Saved UID", r, d)
				}
			}
		})
	}
	// alice (a local user, addressed as user@$myhostname as Postfix's
	// mailbox_transport does) and carol@example.edu each got both messages,
	// with envelope headers.
	for _, user := range []string{"alice", "carol@example.edu"} {
		msgs := e.stored(t, user, "INBOX")
		if len(msgs) != 2 {
			t.Fatalf("%s: %d messages, want 2", user, len(msgs))
		}
		for i, m := range msgs {
			if m.uid != backend.UID(i+1) {
				t.Errorf("%s: UIDs %d at %d, want strictly increasing from 1", user, m.uid, i)
			}
			if got := m.header.Get("Return-Path"); got != "<sender@example.org>" {
				t.Errorf("%s: Return-Path %q", user, got)
			}
			if got := m.header.Get("Delivered-To"); !strings.HasPrefix(got, strings.Split(user, "@")[0]+"@") {
				t.Errorf("%s: Delivered-To %q", user, got)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, "example.edu", "nobody")); !os.IsNotExist(err) {
		t.Errorf("a Maildir was created for an unknown user: %v", err)
	}
}

func TestOverQuota(t *testing.T) {
	for _, tc := range []struct {
		name      string
		permanent bool
		code      int
		enh       smtp.EnhancedCode
	}{
		{"temporary", false, 452, smtp.EnhancedCode{4, 2, 2}},
		{"permanent", true, 552, smtp.EnhancedCode{5, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, quota.Options{Permanent: tc.permanent}, nil)
			c := e.dial(t, "unix")
			// At RCPT: the SIZE= Postfix announces does not fit alice's 20000 bytes.
			_, rcptErrs := send(t, c, "s@example.org", 30000, []string{"alice@mx.test"}, "")
			if se := rcptErrs["alice@mx.test"]; se == nil || se.Code != tc.code || se.EnhancedCode != tc.enh {
				t.Errorf("RCPT with SIZE=30000: %+v, want %d %v", se, tc.code, tc.enh)
			}
			// After DATA: no SIZE given, the message is too big; bob
			// (unlimited) in the same transaction still gets it.
			data, _ := send(t, c, "s@example.org", 0, []string{"alice@mx.test", "bob@mx.test"}, message("big@x", 25000))
			if d := data["alice@mx.test"]; d == nil || d.Code != tc.code || d.EnhancedCode != tc.enh {
				t.Errorf("DATA over quota: %+v, want %d %v", d, tc.code, tc.enh)
			}
			if d := data["bob@mx.test"]; d == nil || d.Code != 250 {
				t.Errorf("bob in the same transaction: %+v, want 250", d)
			}
			if n := len(e.stored(t, "alice", "INBOX")); n != 0 {
				t.Errorf("alice has %d messages after refusals, want 0", n)
			}
			if n := len(e.stored(t, "bob", "INBOX")); n != 1 {
				t.Errorf("bob has %d messages, want 1", n)
			}
		})
	}
}

// unavailable is an auth backend that cannot answer (LDAP down).
type unavailable struct{}

func (unavailable) Lookup(context.Context, string) (*auth.Identity, error) {
	return nil, fmt.Errorf("ldap://127.0.0.1:1: connection refused: %w", auth.ErrUnavailable)
}

func TestAuthUnavailable(t *testing.T) {
	e := newEnv(t, quota.Options{}, func(o *lmtp.Options) { o.Auth = unavailable{} })
	c := e.dial(t, "unix")
	_, rcptErrs := send(t, c, "s@example.org", 0, []string{"alice@mx.test"}, "")
	if se := rcptErrs["alice@mx.test"]; se == nil || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Errorf("RCPT with auth down: %+v, want 451 4.3.0", se)
	}
}

func TestDetailFolders(t *testing.T) {
	e := newEnv(t, quota.Options{}, nil)
	ctx := context.Background()
	id, err := e.auth.Lookup(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	acct, _ := e.policy.Account(id, false)
	u, err := e.store.Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.CreateMailbox(ctx, "lists", ""); err != nil {
		t.Fatal(err)
	}
	u.Close()
	c := e.dial(t, "unix")
	for _, r := range []string{"bob+lists@mx.test", "bob+nosuchfolder@mx.test", "bob@mx.test"} {
		data, rcptErrs := send(t, c, "s@example.org", 0, []string{r}, message(r, 10))
		if d := data[r]; d == nil || d.Code != 250 || len(rcptErrs) > 0 {
			t.Fatalf("%s: %+v %v", r, d, rcptErrs)
		}
	}
	if got := e.stored(t, "bob", "lists"); len(got) != 1 || got[0].header.Get("Delivered-To") != "bob+lists@mx.test" {
		t.Errorf("lists folder: %d messages, want the +lists one", len(got))
	}
	if got := e.stored(t, "bob", "INBOX"); len(got) != 2 {
		t.Errorf("INBOX: %d messages, want 2 (+nosuchfolder falls back to INBOX)", len(got))
	}
}

func TestDetailFoldersOff(t *testing.T) {
	e := newEnv(t, quota.Options{}, func(o *lmtp.Options) { o.DetailFolders = false })
	c := e.dial(t, "unix")
	if data, _ := send(t, c, "s@example.org", 0, []string{"bob+lists@mx.test"}, message("d", 10)); data["bob+lists@mx.test"].Code != 250 {
		t.Fatalf("reply %+v", data)
	}
	if got := e.stored(t, "bob", "INBOX"); len(got) != 1 {
		t.Errorf("INBOX: %d messages, want 1", len(got))
	}
}

// TestQuotaWarningOncePerCrossing delivers concurrently over several
// connections to two servers with separate stores (as two lmtpd processes
// would be) and checks that each threshold crossing yields exactly one
// warning.
func TestQuotaWarningOncePerCrossing(t *testing.T) {
	qopts := quota.Options{Warnings: []int{50, 90}, Hostname: "mx.test"}
	e := newEnv(t, qopts, nil)
	// A second server over the same Maildirs with its own store: another
	// process as far as in-memory state goes.
	_, tcp2 := serve(t, lmtp.Options{Auth: e.auth, Store: maildir.New(maildir.Options{Fsync: true}),
		Quota: e.policy, Hostname: "mx.test", LocalDomains: []string{"mx.test"}})
	addrs := []string{e.tcp, tcp2}

	// dave's limit is 100000 bytes and each message about 5200.
	const r = "dave@mx.test"
	deliverConcurrently := func(prefix string, n int) {
		errs := make(chan error, n)
		for i := range n {
			go func() {
				conn, err := net.DialTimeout("tcp", addrs[i%2], 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				c := smtp.NewClientLMTP(conn)
				defer c.Close()
				if err := c.SendMail("s@example.org", []string{r}, strings.NewReader(message(fmt.Sprintf("%s%d@x", prefix, i), 5000))); err != nil {
					errs <- fmt.Errorf("delivery %s%d: %w", prefix, i, err)
					return
				}
				errs <- nil
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	warnings := func() []storedMsg {
		var w []storedMsg
		for _, m := range e.stored(t, "dave", "INBOX") {
			if m.header.Get("Auto-Submitted") == "auto-generated" {
				w = append(w, m)
			}
		}
		return w
	}
	deliverConcurrently("a", 10) // 0 -> ~52%
	if w := warnings(); len(w) != 1 || !strings.Contains(w[0].header.Get("Subject"), "% full") {
		t.Fatalf("after crossing 50%%: %d warnings, want 1", len(w))
	}
	deliverConcurrently("b", 3) // -> ~69%: no crossing
	if w := warnings(); len(w) != 1 {
		t.Fatalf("no new crossing: %d warnings, want still 1", len(w))
	}
	deliverConcurrently("c", 5) // -> ~95%: crossing 90%
	if w := warnings(); len(w) != 2 {
		t.Fatalf("after crossing 90%%: %d warnings, want 2", len(w))
	}
	state, err := os.ReadFile(filepath.Join(e.root, "dave", "Maildir", quota.StateFile))
	if err != nil || strings.TrimSpace(string(state)) != "90" {
		t.Errorf("state file %q, %v; want 90", state, err)
	}
}

// TestPipelinedTranscript speaks LMTP the way Postfix does with
// PIPELINING: the whole envelope in one write, then the message; replies
// come in order, one per accepted recipient after DATA (RFC 2033 4.2).
func TestPipelinedTranscript(t *testing.T) {
	e := newEnv(t, quota.Options{}, nil)
	conn, err := net.DialTimeout("unix", e.socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := textproto.NewReader(bufio.NewReader(conn))
	expect := func(code int, contains string) {
		t.Helper()
		_, msg, err := r.ReadResponse(code)
		if err != nil || !strings.Contains(msg, contains) {
			t.Fatalf("want %d %q: got %q, %v", code, contains, msg, err)
		}
	}
	expect(220, "LMTP")
	io.WriteString(conn, "LHLO postfix.test\r\n"+
		"MAIL FROM:<s@example.org> SIZE=60\r\n"+
		"RCPT TO:<alice@mx.test>\r\n"+
		"RCPT TO:<nobody@example.edu>\r\n"+
		"RCPT TO:<bob+x@mx.test>\r\n"+
		"DATA\r\n")
	expect(250, "PIPELINING")
	expect(250, "")
	expect(250, "")
	expect(550, "User unknown")
	expect(250, "")
	expect(354, "")
	io.WriteString(conn, "Subject: pipelined\r\n\r\n..a line starting with a dot\r\n.\r\nQUIT\r\n")
	expect(250, "<alice@mx.test> Saved UID 1 in INBOX")
	expect(250, "<bob+x@mx.test> Saved UID 1 in INBOX")
	expect(221, "")
	got := e.stored(t, "alice", "INBOX")
	if len(got) != 1 || !strings.HasSuffix(got[0].raw, "\r\n.a line starting with a dot\r\n") {
		t.Errorf("alice's copy is not the unstuffed message: %+v", got)
	}
}
