package pop3d_test

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/pop3d"
)

const (
	msg1 = "From: a@example.edu\nSubject: one\n\nHello\n.dot line\n..two dots\n"
	msg2 = "From: b@example.edu\nSubject: two\n\nline 1\nline 2\nline 3\n"
	msg3 = "Subject: three\n\nno final newline"
)

// crlf is what clients must see for an LF message file.
func crlf(m string) string { return strings.ReplaceAll(m, "\n", "\r\n") }

func size(m string) int { return len(crlf(m)) }

func TestAuthorizationState(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	c := e.dial()
	c.run(`
		S: +OK pop.example.edu POP3 server ready
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
		C: STAT
		S: -ERR STAT is not valid in the AUTHORIZATION state
		C: RETR 1
		S: -ERR RETR is not valid in the AUTHORIZATION state
		C: NOOP
		S: -ERR NOOP is not valid in the AUTHORIZATION state
		C: PASS secret
		S: -ERR Send USER first
		C: XYZ
		S: -ERR Unknown command: XYZ
		C: XYZZY
		S: -ERR Unknown command
		C: USER alice
		S: +OK
		C: PASS wrong
		S: -ERR [AUTH] Authentication failed
		C: PASS secret
		S: -ERR Send USER first
		C: APOP alice 0123456789abcdef0123456789abcdef
		S: -ERR APOP is not available on this server
		C: STLS
		S: -ERR TLS is not available on this server
		C: USER ALICE
		S: +OK
		C: PASS secret
		S: +OK Logged in, 1 messages (` + fmt.Sprint(size(msg1)) + ` octets)
		C: USER alice
		S: -ERR USER is not valid in the TRANSACTION state
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: IMPLEMENTATION Roost
		S: .
		C: QUIT
		S: +OK Bye (0 messages removed)
		S: <EOF>`)
}

func TestQuitInAuthorization(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	e.dial().run(`
		S: +OK...
		C: USER alice
		S: +OK
		C: QUIT
		S: +OK Bye
		S: <EOF>`)
	if n := len(e.inbox("alice").Messages()); n != 1 {
		t.Errorf("%d messages after QUIT in AUTHORIZATION, want 1", n)
	}
}

func TestTransaction(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2, msg3)
	s1, s2, s3 := size(msg1), size(msg2), size(msg3)
	snap := e.inbox("alice")
	uidl := func(i int) string {
		return fmt.Sprintf("%08x%08x", uint32(snap.Messages()[i].UID), snap.UIDValidity)
	}
	c := e.login("alice", "secret")
	c.run(fmt.Sprintf(`
		C: STAT
		S: +OK 3 %[1]d
		C: LIST
		S: +OK 3 messages (%[1]d octets)
		S: 1 %[2]d
		S: 2 %[3]d
		S: 3 %[4]d
		S: .
		C: LIST 2
		S: +OK 2 %[3]d
		C: LIST 0
		S: -ERR no such message, only 3 messages in maildrop
		C: LIST 4
		S: -ERR no such message, only 3 messages in maildrop
		C: LIST abc
		S: -ERR invalid message number "abc"
		C: LIST -1
		S: -ERR invalid message number "-1"
		C: LIST 99999999999999999999999
		S: -ERR invalid message number "99999999999999999999999"
		C: LIST 1 2
		S: -ERR Usage: LIST [message]
		C: UIDL
		S: +OK
		S: 1 %[5]s
		S: 2 %[6]s
		S: 3 %[7]s
		S: .
		C: UIDL 3
		S: +OK 3 %[7]s
		C: RETR
		S: -ERR Usage: RETR message
		C: RETR 1
		S: +OK %[2]d octets
		S: From: a@example.edu
		S: Subject: one
		S:
		S: Hello
		S: ..dot line
		S: ...two dots
		S: .
		C: RETR 3
		S: +OK %[4]d octets
		S: Subject: three
		S:
		S: no final newline
		S: .
		C: TOP 2 1
		S: +OK
		S: From: b@example.edu
		S: Subject: two
		S:
		S: line 1
		S: .
		C: TOP 2 0
		S: +OK
		S: From: b@example.edu
		S: Subject: two
		S:
		S: .
		C: TOP 2
		S: -ERR Usage: TOP message lines
		C: TOP 2 x
		S: -ERR Invalid number of lines
		C: DELE 2
		S: +OK Message 2 deleted
		C: DELE 2
		S: -ERR message 2 already deleted
		C: RETR 2
		S: -ERR message 2 already deleted
		C: TOP 2 1
		S: -ERR message 2 already deleted
		C: LIST 2
		S: -ERR message 2 already deleted
		C: UIDL 2
		S: -ERR message 2 already deleted
		C: STAT
		S: +OK 2 %[8]d
		C: LIST
		S: +OK 2 messages (%[8]d octets)
		S: 1 %[2]d
		S: 3 %[4]d
		S: .
		C: UIDL
		S: +OK
		S: 1 %[5]s
		S: 3 %[7]s
		S: .
		C: RSET
		S: +OK 3 messages (%[1]d octets)
		C: STAT
		S: +OK 3 %[1]d
		C: NOOP
		S: +OK
		C: NOOP x
		S: -ERR NOOP takes no arguments
		C: DELE 1
		S: +OK Message 1 deleted
		C: DELE 3
		S: +OK Message 3 deleted
		C: QUIT
		S: +OK Bye (2 messages removed)
		S: <EOF>`, s1+s2+s3, s1, s2, s3, uidl(0), uidl(1), uidl(2), s1+s3))

	// Another store handle (imapd, roostctl) sees the result of UPDATE.
	after := e.inbox("alice")
	if len(after.Messages()) != 1 || after.Messages()[0].UID != snap.Messages()[1].UID {
		t.Fatalf("after QUIT: %+v, want only message 2", after.Messages())
	}
	// Message 2 was only read with TOP: no \Seen.
	if after.Messages()[0].Flags&backend.FlagSeen != 0 {
		t.Error("TOP set \\Seen")
	}
	e.waitLog(`msg="pop3 session" .*user=alice .*end=quit .*retr=2 retr_bytes=\d+ top=2 dele=2 .*expunged=2`)
}

// A connection that drops deletes nothing, but RETRs that completed still
// mark their messages \Seen.
func TestDroppedConnectionDeletesNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2)
	c := e.login("alice", "secret")
	c.run(`
		C: RETR 2
		S: +OK...
		S: From: b@example.edu
		S: Subject: two
		S:
		S: line 1
		S: line 2
		S: line 3
		S: .
		C: DELE 1
		C: DELE 2
		S: +OK Message 1 deleted
		S: +OK Message 2 deleted`)
	c.conn.Close()
	// The lock is free again once the server has noticed.
	c = e.waitLogin("alice", "secret")
	c.run(`
		C: STAT
		S: +OK 2 ...`)
	snap := e.inbox("alice")
	if len(snap.Messages()) != 2 {
		t.Fatalf("%d messages after a dropped connection, want 2", len(snap.Messages()))
	}
	if snap.Messages()[0].Flags&backend.FlagSeen != 0 || snap.Messages()[1].Flags&backend.FlagSeen == 0 {
		t.Errorf("flags %v %v: want only message 2 \\Seen", snap.Messages()[0].Flags, snap.Messages()[1].Flags)
	}
}

// waitLogin logs in, retrying while an earlier session still holds the
// maildrop lock.
func (e *env) waitLogin(user, pass string) *client {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := e.dial()
		c.run("S: +OK...\nC: USER " + user + "\nC: PASS " + pass + "\nS: +OK")
		l := c.line()
		if strings.HasPrefix(l, "+OK Logged in") {
			return c
		}
		if !strings.HasPrefix(l, "-ERR [IN-USE]") || time.Now().After(deadline) {
			e.t.Fatalf("login: %q", l)
		}
		c.conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInUse(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	c1 := e.login("alice", "secret")
	c2 := e.dial()
	c2.run(`
		S: +OK...
		C: USER alice
		C: PASS secret
		S: +OK
		S: -ERR [IN-USE] Your mailbox is in use by another POP3 session
		C: STAT
		S: -ERR STAT is not valid in the AUTHORIZATION state`)
	c1.run(`
		C: QUIT
		S: +OK Bye (0 messages removed)`)
	// QUIT released the lock before answering: no retry needed.
	c2.run(`
		C: USER alice
		C: PASS secret
		S: +OK
		S: +OK Logged in, 1 messages...`)
}

func TestPipelining(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg2, msg2)
	c := e.dial()
	// Everything in one write, from greeting to QUIT (RFC 2449 6.6).
	c.run(fmt.Sprintf(`
		S: +OK...
		C: USER alice
		C: PASS secret
		C: STAT
		C: LIST 1
		C: TOP 1 0
		C: DELE 1
		C: ZZZZ
		C: STAT
		C: QUIT
		S: +OK
		S: +OK Logged in, 2 messages (%[1]d octets)
		S: +OK 2 %[1]d
		S: +OK 1 %[2]d
		S: +OK
		S: From: b@example.edu
		S: Subject: two
		S:
		S: .
		S: +OK Message 1 deleted
		S: -ERR Unknown command: ZZZZ
		S: +OK 1 %[2]d
		S: +OK Bye (1 messages removed)
		S: <EOF>`, 2*size(msg2), size(msg2)))
}

func TestLongLines(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	long := strings.Repeat("A", 300)
	huge := strings.Repeat("x", 1<<20) // never buffered whole
	c.run(`
		S: +OK...
		C: USER ` + long + `
		S: -ERR Line too long (RFC 2449 allows 255 octets)
		C: ` + huge + `
		S: -ERR Line too long (RFC 2449 allows 255 octets)
		C: USER ` + strings.Repeat("b", 248) + `
		S: +OK
		C: QUIT
		S: +OK Bye`)
}

func TestTooManyBadCommands(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	c.run("S: +OK...")
	c.send("GET / HTTP/1.1", "Host: x", "", "a", "b", "c", "d", "e", "f", "g")
	for range 10 {
		if l := c.line(); !strings.HasPrefix(l, "-ERR") {
			t.Fatalf("got %q", l)
		}
	}
	c.run(`
		S: -ERR Too many bad commands, closing connection
		S: <EOF>`)
}

func TestPlaintextRefusedWithoutTLS(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) { o.AllowPlaintextAuth = false })
	e.dial().run(`
		S: +OK...
		C: CAPA
		S: +OK Capability list follows
		S: TOP
		S: UIDL
		S: RESP-CODES
		S: AUTH-RESP-CODE
		S: PIPELINING
		S: IMPLEMENTATION Roost
		S: .
		C: USER alice
		S: -ERR [AUTH] Plaintext authentication is not allowed without TLS: use STLS or port 995
		C: PASS secret
		S: -ERR [AUTH] Plaintext authentication is not allowed...
		C: AUTH PLAIN ` + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")) + `
		S: -ERR [AUTH] Plaintext authentication is not allowed...
		C: AUTH
		S: +OK
		S: .`)
	// A connection the IsSecure hook trusts (same host) may.
	e = newEnv(t, func(o *pop3d.Options) { o.AllowPlaintextAuth, o.IsSecure = false, nil })
	e.deliver("alice", msg1)
	e.login("alice", "secret")
}

func TestSASL(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := e.dial()
	c.run(`
		S: +OK...
		C: AUTH
		S: +OK
		S: PLAIN
		S: LOGIN
		S: .
		C: AUTH CRAM-MD5
		S: -ERR Unsupported authentication mechanism
		C: AUTH PLAIN
		S: + 
		C: *
		S: -ERR Authentication cancelled
		C: AUTH LOGIN
		S: + ` + b64("Username:") + `
		C: ` + b64("alice") + `
		S: + ` + b64("Password:") + `
		C: *
		S: -ERR Authentication cancelled
		C: AUTH PLAIN !!!
		S: -ERR Authentication failed: invalid base64 in response
		C: AUTH PLAIN ` + b64("bob\x00alice\x00secret") + `
		S: -ERR Authentication failed: authorization identity differs from the login name
		C: AUTH PLAIN ` + b64("\x00alice\x00wrong") + `
		S: -ERR [AUTH] Authentication failed
		C: AUTH PLAIN
		S: + 
		C: ` + b64("alice\x00alice\x00secret") + `
		S: +OK Logged in, 1 messages...
		C: AUTH PLAIN
		S: -ERR AUTH is not valid in the TRANSACTION state
		C: QUIT
		S: +OK...`)
	// LOGIN with an initial response, the way Outlook does it.
	e.dial().run(`
		S: +OK...
		C: AUTH LOGIN ` + b64("alice") + `
		S: + ` + b64("Password:") + `
		C: ` + b64("secret") + `
		S: +OK Logged in...`)
}

func TestAPOP(t *testing.T) {
	var e *env
	e = newEnv(t, func(o *pop3d.Options) { o.Auth = apopUsers{o.Auth.(*users)} })
	e.deliver("alice", msg1)
	c := e.dial()
	greeting := c.line()
	ts := regexp.MustCompile(`<[^<>@]+@pop\.example\.edu>$`).FindString(greeting)
	if ts == "" {
		t.Fatalf("greeting %q has no APOP timestamp", greeting)
	}
	digest := func(p string) string { s := md5.Sum([]byte(ts + p)); return hex.EncodeToString(s[:]) }
	c.run(`
		C: APOP alice ` + digest("wrong") + `
		S: -ERR [AUTH] Authentication failed
		C: APOP alice
		S: -ERR Usage: APOP name digest
		C: APOP alice ` + strings.ToUpper(digest("secret")) + `
		S: +OK Logged in, 1 messages...`)
	// Every greeting has its own timestamp.
	if g2 := e.dial().line(); g2 == greeting {
		t.Errorf("two greetings with the same timestamp %q", g2)
	}
}

func TestAuthUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	e.users.unavl = true
	e.dial().run(`
		S: +OK...
		C: USER alice
		C: PASS secret
		S: +OK
		S: -ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later`)
}

func TestTooManyAuthFailures(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	c.run("S: +OK...")
	for range 5 {
		c.run(`
			C: USER alice
			C: PASS nope
			S: +OK
			S: -ERR [AUTH] Authentication failed`)
	}
	c.run("S: <EOF>")
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) { o.IdleTimeout = 300 * time.Millisecond })
	e.deliver("alice", msg1)
	c := e.login("alice", "secret")
	c.run(`
		C: DELE 1
		S: +OK Message 1 deleted
		S: -ERR Disconnected for inactivity
		S: <EOF>`)
	if n := len(e.inbox("alice").Messages()); n != 1 {
		t.Errorf("%d messages after a timeout, want 1 (no UPDATE)", n)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	c := e.login("alice", "secret")
	c.run(`
		C: DELE 1
		S: +OK Message 1 deleted`)
	idle := e.dial()
	idle.run("S: +OK...")
	if err := e.srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.run(`
		S: -ERR [SYS/TEMP] Server shutting down, try again shortly
		S: <EOF>`)
	idle.run(`
		S: -ERR [SYS/TEMP] Server shutting down...
		S: <EOF>`)
	if n := len(e.inbox("alice").Messages()); n != 1 {
		t.Errorf("%d messages after shutdown, want 1", n)
	}
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}
