package pop3d_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth/penalty"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/pop3d"
)

// put writes a message file into user's Maildir sub-directory ("new" or
// "cur") with the given mtime (the internal date).
func (e *env) put(user, sub, name, content string, mtime time.Time) {
	e.t.Helper()
	e.deliver(user) // creates the directories
	p := filepath.Join(e.maildir(user), sub, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		e.t.Fatal(err)
	}
}

func TestSTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	e := newEnv(t, func(o *pop3d.Options) { o.TLSConfig, o.AllowPlaintextAuth = serverTLS, false })
	e.deliver("alice", msg1)
	c := e.dial()
	c.run(`
		S: +OK...
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: STLS
		S: IMPLEMENTATION Roost
		S: .
		C: STLS
		C: USER alice
		S: -ERR STLS refused: commands were pipelined after STLS
		S: -ERR [AUTH] Plaintext authentication is not allowed...
		C: STLS
		S: +OK Begin TLS negotiation`)
	tc := tls.Client(c.conn, clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.run(`
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: USER
		S: SASL PLAIN LOGIN
		S: IMPLEMENTATION Roost
		S: .
		C: STLS
		S: -ERR TLS is already active
		C: USER alice
		C: PASS secret
		S: +OK
		S: +OK Logged in, 1 messages...
		C: RETR 1
		S: +OK...
		S: From: a@example.edu
		S: Subject: one
		S:
		S: Hello
		S: ..dot line
		S: ...two dots
		S: .
		C: QUIT
		S: +OK...`)
	e.waitLog(`msg="pop3 session" .*tls=true`)
}

func TestImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	e := newEnv(t, func(o *pop3d.Options) { o.AllowPlaintextAuth = false })
	e.tls = clientTLS
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(tls.NewListener(ln, serverTLS))
	e.deliver("alice", msg1)
	e.dialTLS(ln.Addr().String()).run(`
		S: +OK...
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: USER
		S: SASL PLAIN LOGIN
		S: IMPLEMENTATION Roost
		S: .
		C: USER alice
		C: PASS secret
		S: +OK
		S: +OK Logged in, 1 messages...`)
}

func TestLoginDelay(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) { o.LoginDelay = time.Hour })
	e.deliver("alice", msg1)
	c := e.dial()
	c.run(`
		S: +OK...
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: USER
		S: SASL PLAIN LOGIN
		S: LOGIN-DELAY 3600
		S: IMPLEMENTATION Roost
		S: .
		C: USER alice
		C: PASS secret
		S: +OK
		S: +OK Logged in...
		C: QUIT
		S: +OK...`)
	for range 2 { // the refusal does not keep the lock: never [IN-USE]
		e.dial().run(`
			S: +OK...
			C: USER alice
			C: PASS secret
			S: +OK
			S: -ERR [LOGIN-DELAY] Logins are allowed every 3600 seconds; try again in 3...`)
	}
	// The state survives a restart: a new server on the same Maildirs.
	e2 := newEnv(t, func(o *pop3d.Options) { o.LoginDelay, o.Auth = time.Hour, e.users })
	e2.root = e.root
	e2.dial().run(`
		S: +OK...
		C: USER alice
		C: PASS secret
		S: +OK
		S: -ERR [LOGIN-DELAY]...`)
	// Once the delay is over, the login works.
	old := time.Now().Add(-2 * time.Hour).Unix()
	if err := os.WriteFile(filepath.Join(e.maildir("alice"), "roost-pop3-login"), []byte(strconv.FormatInt(old, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.login("alice", "secret")
}

// TestExpire pins down EXPIRE: at QUIT, messages that were retrieved (\Seen
// at login, or sent by RETR in this session) and whose internal date is at
// least ExpireDays old are removed; nothing else is.
func TestExpire(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) { o.ExpireDays = 7 })
	old, recent := time.Now().Add(-10*24*time.Hour), time.Now().Add(-24*time.Hour)
	e.put("alice", "cur", "1000000001.A.test:2,S", "Subject: old seen\n\nx\n", old)
	e.put("alice", "new", "1000000002.B.test", "Subject: old unseen, retrieved now\n\nx\n", old)
	e.put("alice", "new", "1000000003.C.test", "Subject: old never retrieved\n\nx\n", old)
	e.put("alice", "cur", "1000000004.D.test:2,S", "Subject: recent seen\n\nx\n", recent)
	num := map[string]int{}
	for i, m := range e.inbox("alice").Messages() {
		num[m.Key[11:12]] = i + 1 // A, B, C, D: UID order is the store's
	}
	c := e.login("alice", "secret")
	c.run(`
		C: CAPA
		S: +OK...
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: EXPIRE 7
		S: IMPLEMENTATION Roost
		S: .
		C: TOP ` + strconv.Itoa(num["C"]) + ` 0
		S: +OK
		S: Subject: old never retrieved
		S:
		S: .
		C: RETR ` + strconv.Itoa(num["B"]) + `
		S: +OK...
		S: Subject: old unseen, retrieved now
		S:
		S: x
		S: .`)
	// A dropped session expires nothing.
	c.conn.Close()
	c = e.waitLogin("alice", "secret")
	c.run(`
		C: STAT
		S: +OK 4 ...
		C: QUIT
		S: +OK Bye (2 messages removed)`)
	var subjects []string
	for _, m := range e.inbox("alice").Messages() {
		subjects = append(subjects, m.Key)
	}
	slices.Sort(subjects)
	if strings.Join(subjects, " ") != "1000000003.C.test 1000000004.D.test" {
		t.Errorf("left after EXPIRE: %v", subjects)
	}
	e.waitLog(`msg="pop3 session" .*expired=2`)
}

// UIDLs never change: not across sessions, not when IMAP changes flags
// (the file is renamed), not across restarts, not when mail arrives.
func TestUIDLStable(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2)
	uidls := func(e *env) string {
		c := e.waitLogin("alice", "secret")
		c.send("UIDL")
		var lines []string
		for l := c.line(); l != "."; l = c.line() {
			lines = append(lines, l)
		}
		c.run("C: QUIT\nS: +OK...")
		return strings.Join(lines[1:], "\n")
	}
	first := uidls(e)
	// IMAP-style flag change through another handle.
	ctx := context.Background()
	st := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	u, err := st.Open(ctx, backend.Account{Name: "alice", Maildir: e.maildir("alice"), UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := u.OpenMailbox(ctx, "INBOX")
	snap, _ := mb.Sync(ctx)
	if _, err := mb.SetFlags(ctx, []backend.UID{snap.Messages()[0].UID, snap.Messages()[1].UID}, backend.FlagsAdd, backend.FlagFlagged|backend.FlagAnswered, []string{"$Label1"}); err != nil {
		t.Fatal(err)
	}
	mb.Close()
	u.Close()
	st.Close()
	e.deliver("alice", msg3)
	second := uidls(e)
	if !strings.HasPrefix(second, first+"\n3 ") {
		t.Errorf("UIDLs changed:\nbefore %q\nafter  %q", first, second)
	}
	// A restarted server (new store, new process state) shows the same.
	e2 := newEnv(t, func(o *pop3d.Options) { o.Auth = e.users })
	e2.root = e.root
	if third := uidls(e2); third != second {
		t.Errorf("UIDLs changed across restart:\nbefore %q\nafter  %q", second, third)
	}
}

func TestThrottle(t *testing.T) {
	p := penalty.New(penalty.Options{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond})
	e := newEnv(t, func(o *pop3d.Options) { o.Throttle = p })
	e.deliver("alice", msg1)
	e.dial().run(`
		S: +OK...
		C: USER alice
		C: PASS wrong
		S: +OK
		S: -ERR [AUTH]...`)
	lo := netip.MustParseAddr("127.0.0.1")
	if p.Delay(lo, "alice") <= 0 {
		t.Fatal("a failed login left no penalty")
	}
	start := time.Now()
	e.login("alice", "secret") // still works, only later
	if time.Since(start) < 10*time.Millisecond {
		t.Error("login after a failure was not delayed")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	e := newEnv(t, nil)
	for _, o := range []pop3d.Options{
		{},
		{Store: e.store},
		{Store: e.store, Auth: e.users, UIDLFormat: "%m"},
		{Store: e.store, Auth: e.users, ExpireDays: -1},
	} {
		if _, err := pop3d.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// A client that opens the TLS port and says nothing is dropped after the
// handshake timeout (here the shorter idle timeout), not kept for ever.
func TestImplicitTLSSilentClient(t *testing.T) {
	serverTLS, _ := selfSigned(t)
	e := newEnv(t, func(o *pop3d.Options) { o.IdleTimeout = 200 * time.Millisecond })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(tls.NewListener(ln, serverTLS))
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server kept a silent TLS client: %v", err)
	}
	e.waitLog(`msg="pop3 session" .*end=tls-handshake`)
}
