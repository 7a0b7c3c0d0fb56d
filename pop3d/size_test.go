package pop3d_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/backend/storetest"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/pop3d"
)

// sizeMessages are tricky's awkward messages and a big one.
var sizeMessages = append(append([]string{}, tricky...), "Subject: big\n\n"+strings.Repeat(".a line of a long message\n", 20000))

// unmeasuredPair delivers sizeMessages to alice as Postfix does (no size
// in the file names) and returns two servers on that Maildir: one whose
// snapshots have every size (a storetest.SizeHider hiding none), and one whose
// snapshots report -1 for the messages hide picks (every one if nil).
func unmeasuredPair(t *testing.T, hide func(backend.Message) bool) (known, unknown *env, us *storetest.SizeHider) {
	t.Helper()
	return unmeasuredPairOf(t, hide, sizeMessages...)
}

// unmeasuredPairOf is unmeasuredPair with msgs for messages.
func unmeasuredPairOf(t *testing.T, hide func(backend.Message) bool, msgs ...string) (known, unknown *env, us *storetest.SizeHider) {
	t.Helper()
	known = newEnv(t, func(o *pop3d.Options) { o.Store = &storetest.SizeHider{Store: o.Store, Hide: measureAll} })
	known.deliver("alice", msgs...)
	us = &storetest.SizeHider{Hide: hide}
	unknown = newEnv(t, func(o *pop3d.Options) { us.Store, o.Store, o.Auth = o.Store, us, known.users })
	unknown.root = known.root
	return known, unknown, us
}

// measureAll hides no size.
func measureAll(backend.Message) bool { return false }

// session runs one pipelined POP3 session as alice and returns every octet
// the server sent, up to the end of the connection after QUIT.
func (e *env) session(cmds ...string) string {
	e.t.Helper()
	c := e.dial()
	c.send(append(append([]string{"USER alice", "PASS secret"}, cmds...), "QUIT")...)
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	out, err := io.ReadAll(c.r)
	if err != nil {
		e.t.Fatalf("session: %v after %d octets", err, len(out))
	}
	// The greeting carries a fresh APOP timestamp.
	_, rest, _ := strings.Cut(string(out), "\r\n")
	return rest
}

// replies splits what session returned into one reply per command: RETR's
// ("+OK n octets") runs to its ".\r\n" line, any other is one line.
func replies(out string) []string {
	var rs []string
	for out != "" {
		end := strings.Index(out, "\r\n") + 2
		if strings.HasPrefix(out, "+OK ") && strings.HasSuffix(out[:end], " octets\r\n") {
			end = strings.Index(out, "\r\n.\r\n") + 5
		}
		rs = append(rs, out[:end])
		out = out[end:]
	}
	return rs
}

// sizeSession is a session that asks for every size in every form: the
// login line, STAT, LIST with and without argument, RETR (octet counts
// and contents), TOP, UIDL, and the totals after DELE and RSET.
var sizeSession = []string{
	"STAT", "LIST", "LIST 1", "LIST 7", "UIDL",
	"RETR 1", "RETR 2", "RETR 3", "RETR 4", "RETR 5", "RETR 6", "RETR 7",
	"TOP 1 0", "TOP 7 3", "DELE 7", "DELE 2", "STAT", "LIST", "RSET", "STAT",
}

// TestUnmeasuredSizesAnswerAlike: a POP3 client cannot tell a store that
// has not measured sizes from one that has: the sessions are byte for
// byte alike, the unmeasured sizes are asked once each at login and never
// again, and a login where every size is known asks none.
func TestUnmeasuredSizesAnswerAlike(t *testing.T) {
	for _, tc := range []struct {
		name string
		hide func(backend.Message) bool
		want int64 // MessageSize calls
	}{
		{"all unmeasured", nil, int64(len(sizeMessages))},
		{"odd UIDs unmeasured", func(m backend.Message) bool { return m.UID%2 == 1 }, int64(len(sizeMessages)+1) / 2},
		{"all measured", measureAll, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			known, unknown, us := unmeasuredPair(t, tc.hide)
			want := known.session(sizeSession...)
			got := unknown.session(sizeSession...)
			if got != want {
				t.Errorf("unmeasured sizes answer\n%.3000q\nmeasured sizes answer\n%.3000q", got, want)
			}
			if !strings.Contains(got, "+OK Logged in, 7 messages (") || strings.Contains(got, "-ERR") {
				t.Errorf("session:\n%.2000s", got)
			}
			if n := us.Calls.Load(); n != tc.want {
				t.Errorf("%d MessageSize calls, want %d", n, tc.want)
			}
		})
	}
}

// TestUnmeasuredSizesPoplib: Python's poplib sees the same STAT, LIST,
// UIDL and RETR from a store that has not measured sizes as from one that
// has, and each RETR is as long as LIST said.
func TestUnmeasuredSizesPoplib(t *testing.T) {
	python := testenv.Require(t, "python3", "python3")
	known, unknown, _ := unmeasuredPair(t, nil)
	script := `
import poplib, json, sys, base64
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=20)
p.user("alice"); p.pass_("secret")
count, size = p.stat()
out = {"count": count, "size": size, "list": [l.decode() for l in p.list()[1]], "uidl": [l.decode() for l in p.uidl()[1]], "retr": []}
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    out["retr"].append([resp.decode(), octets, base64.b64encode(b"\r\n".join(lines)).decode()])
p.quit()
print(json.dumps(out))
`
	run := func(e *env) string {
		host, port, _ := net.SplitHostPort(e.addr)
		out, err := command(t, "", "", python, "-c", script, host, port)
		if err != nil {
			t.Fatalf("poplib: %v\n%s", err, out)
		}
		return out
	}
	want, got := run(known), run(unknown)
	if got != want {
		t.Errorf("poplib over unmeasured sizes:\n%.2000s\nover measured sizes:\n%.2000s", got, want)
	}
	var res struct {
		Count, Size int
		List        []string
		Retr        [][]any
	}
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		t.Fatal(err)
	}
	if res.Count != len(sizeMessages) || len(res.List) != res.Count || len(res.Retr) != res.Count {
		t.Fatalf("poplib: %.2000s", got)
	}
	for i, l := range res.List {
		if _, size, _ := strings.Cut(l, " "); !strings.Contains(res.Retr[i][0].(string), "+OK "+size+" octets") {
			t.Errorf("message %d: LIST %q, RETR %q", i+1, l, res.Retr[i][0])
		}
	}
}

// TestUnmeasuredSizeOfExpungedMessage: a message expunged (by another
// session) just before the store measures it at login is left out of the
// maildrop, as if login had come a moment later: the others are numbered
// without a gap and keep their sizes and contents.
func TestUnmeasuredSizeOfExpungedMessage(t *testing.T) {
	known, unknown, us := unmeasuredPair(t, nil)
	want := replies(known.session("LIST 3", "RETR 3", "UIDL 3"))
	us.Before = func(mb backend.Mailbox, uid backend.UID) error {
		if uid == 2 {
			_, err := mb.Expunge(context.Background(), []backend.UID{uid})
			return err
		}
		return nil
	}
	got := replies(unknown.session("LIST 2", "RETR 2", "UIDL 2", "LIST 7"))
	if len(got) != 7 || !strings.HasPrefix(got[1], "+OK Logged in, 6 messages (") {
		t.Fatalf("login with message 2 expunged before it was measured:\n%.500q", got)
	}
	// Message 3 of the full maildrop is message 2 now, octet for octet.
	for i, w := range []string{strings.Replace(want[2], "+OK 3 ", "+OK 2 ", 1), want[3], strings.Replace(want[4], "+OK 3 ", "+OK 2 ", 1)} {
		if got[2+i] != w {
			t.Errorf("message 2 after the expunge:\n%.500q\nwant message 3 of before:\n%.500q", got[2+i], w)
		}
	}
	if got[5] != "-ERR no such message, only 6 messages in maildrop\r\n" {
		t.Errorf("LIST 7 after the expunge: %q", got[5])
	}
	if n := len(known.inbox("alice").Messages()); n != len(sizeMessages)-1 {
		t.Errorf("%d messages left, want %d", n, len(sizeMessages)-1)
	}
}

// TestUnmeasuredSizeUnreadable: when the store cannot say a size (an I/O
// error, not an expunge), login fails with [SYS/TEMP], the error is
// logged, and the maildrop lock is released: the next login, once the
// store answers again, succeeds.
func TestUnmeasuredSizeUnreadable(t *testing.T) {
	_, unknown, us := unmeasuredPair(t, nil)
	us.Before = func(backend.Mailbox, backend.UID) error { return errors.New("disk on fire") }
	c := unknown.dial()
	c.run(`
		S: +OK...
		C: USER alice
		C: PASS secret
		S: +OK
		S: -ERR [SYS/TEMP] Cannot read your INBOX, try again later
		C: QUIT
		S: +OK...`)
	unknown.waitLog(`msg="pop3 cannot read INBOX".*disk on fire`)
	us.Before = nil
	if got := unknown.session("STAT"); !strings.Contains(got, "+OK Logged in, 7 messages") {
		t.Errorf("login after the store recovered:\n%.500s", got)
	}
}
