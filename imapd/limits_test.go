package imapd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/imapd"
)

// TestSearchProgramLimits sends SEARCH programs at and just past each
// limit over a socket: depth of NOT and OR, number of keys, number of
// BODY/TEXT keys. Past a limit the answer is NO [LIMIT] and the session
// goes on.
func TestSearchProgramLimits(t *testing.T) {
	ts := newTestServer(t, nil)
	for i := 1; i <= 10; i++ {
		ts.deliver(t, "alice", "", fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i))
	}
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	odd := make([]string, 0, 5000)
	for i := 1; i < 10000; i += 2 {
		odd = append(odd, fmt.Sprint(i))
	}
	for _, tc := range []struct{ name, cmd, want string }{
		{"NOT 32 deep", "SEARCH " + strings.Repeat("NOT ", 32) + "UNDELETED", "* SEARCH 1 2 3 4 5 6 7 8 9 10\r"},
		{"NOT 33 deep", "SEARCH " + strings.Repeat("NOT ", 33) + "DELETED", "NO [LIMIT] Search too complex"},
		{"OR 32 deep", "SEARCH " + strings.Repeat("OR ", 32) + strings.Repeat("1 ", 32) + "2", "* SEARCH 1 2\r"},
		{"OR 33 deep", "SEARCH " + strings.Repeat("OR ", 33) + strings.Repeat("1 ", 33) + "2", "NO [LIMIT]"},
		{"1000 keys", "SEARCH" + strings.Repeat(" UNDELETED", 999) + " 2", "* SEARCH 2\r"},
		{"1001 keys", "SEARCH" + strings.Repeat(" UNDELETED", 1000) + " 2", "NO [LIMIT]"},
		{"keys inside NOT count", "SEARCH NOT (" + strings.Repeat("DELETED ", 1000) + "DELETED)", "NO [LIMIT]"},
		{"50 TEXT keys", "SEARCH" + strings.Repeat(" TEXT body", 50), "* SEARCH 1 2 3 4 5 6 7 8 9 10\r"},
		{"51 TEXT keys", "SEARCH" + strings.Repeat(" TEXT body", 25) + strings.Repeat(" BODY body", 26), "NO [LIMIT]"},
		// A set of 5,000 ranges is one key, tested by binary search.
		{"big sequence set", "SEARCH " + strings.Join(odd, ","), "* SEARCH 1 3 5 7 9\r"},
		{"big UID set", "UID SEARCH UID " + strings.Join(odd, ",") + " NOT UID 5:7", "* SEARCH 1 3 9\r"},
		{"unsorted sets", "SEARCH 9:7,1,2:3,10:* UID 6:2,8", "* SEARCH 2 3 8\r"},
		{"session goes on", "SEARCH TEXT \"body 7\"", "* SEARCH 7\r"},
	} {
		out := strings.Join(r.cmd(tc.cmd), "\r\n") + "\r\n"
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: want %q in\n%.300s", tc.name, tc.want, out)
		}
	}
}

// TestCommandSizeLimit: go-imap bounds a command line but not the literals
// in it, so imapd bounds a whole command (1 MiB). A SEARCH made of many
// literals is refused and the connection closed; an APPEND message bigger
// than that is not a command and still works, also when it is refused.
func TestCommandSizeLimit(t *testing.T) {
	ts := newTestServer(t, nil)
	t.Run("literal flood", func(t *testing.T) {
		r := ts.raw(t)
		r.login("alice", alicePass)
		r.cmd("SELECT INBOX")
		lit := strings.Repeat("x", 4000)
		var b strings.Builder
		b.WriteString("f1 SEARCH")
		for b.Len() < 2<<20 {
			fmt.Fprintf(&b, " TEXT {%d+}\r\n%s", len(lit), lit)
		}
		b.WriteString("\r\n")
		go r.c.Write([]byte(b.String())) // the server stops reading half-way
		var got []string
		r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			l, err := r.br.ReadString('\n')
			if err != nil {
				break // connection closed: what we expect
			}
			got = append(got, strings.TrimSpace(l))
		}
		if len(got) == 0 || !strings.HasPrefix(got[0], "f1 BAD [LIMIT] Command too long") {
			t.Fatalf("literal flood answered %q", got)
		}
		waitFor(t, func() bool { return strings.Contains(ts.logs.String(), "connection closed: command too long") })
	})
	t.Run("big APPEND", func(t *testing.T) {
		r := ts.raw(t)
		r.login("alice", alicePass)
		msg := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 3<<20/18)
		r.send(fmt.Sprintf("a1 APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg))
		if l := last(r.until("a1")); !strings.Contains(l, "a1 OK [APPENDUID") {
			t.Fatalf("3 MiB APPEND: %s", l)
		}
		// Refused before the store reads it: the message is skipped, and
		// the session goes on.
		r.send(fmt.Sprintf("a2 APPEND nosuch {%d}\r\n", len(msg)))
		if l := r.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("APPEND continuation: %s", l)
		}
		r.send(msg + "\r\n")
		if l := last(r.until("a2")); !strings.Contains(l, "a2 NO [TRYCREATE]") {
			t.Fatalf("APPEND to a missing mailbox: %s", l)
		}
		if l := last(r.cmd("NOOP")); !strings.Contains(l, "OK") {
			t.Fatalf("NOOP after refused APPEND: %s", l)
		}
	})
}

// bigMailbox writes n messages of about size octets into alice's INBOX
// cur/ directly (as a migration would leave them).
func bigMailbox(t testing.TB, ts *testServer, n, size int) {
	t.Helper()
	cur := filepath.Join(ts.maildir("alice"), "cur")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(ts.maildir("alice"), sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	body := strings.Repeat("lorem ipsum dolor sit amet\n", size/27)
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("From: a%d@example.org\nSubject: message %d\n\n%s", i, i, body)
		if err := os.WriteFile(filepath.Join(cur, fmt.Sprintf("%d.M%dP1.test:2,S", 1700000000+i, i)), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSearchStopsWhenClientGoes: a TEXT search over a big mailbox is
// abandoned soon after the client disconnects, instead of reading every
// message for no one.
func TestSearchStopsWhenClientGoes(t *testing.T) {
	const n = 2000
	ts := newTestServer(t, nil)
	bigMailbox(t, ts, n, 8<<10)
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	start := time.Now()
	r.send("s1 SEARCH TEXT nowhere-to-be-found\r\n")
	r.c.Close()
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), "search stopped") })
	t.Logf("search stopped %v after the command", time.Since(start))
	line := ts.logs.String()
	line = line[strings.Index(line, "search stopped"):]
	// scanned=0 is a pass too: the read-ahead can see the close before
	// the first message is read.
	scanned := -1
	if i := strings.Index(line, "scanned="); i >= 0 {
		fmt.Sscanf(line[i:], "scanned=%d", &scanned)
	}
	if scanned < 0 || scanned >= n/2 {
		t.Errorf("search stopped after %d of %d messages: %.200s", scanned, n, line)
	}
}

// TestSearchPipelined: the read-ahead that watches for a disconnect during
// a TEXT search must hand commands the client sent meanwhile to the
// parser intact, in plaintext and under TLS.
func TestSearchPipelined(t *testing.T) {
	cfg := selfSigned(t)
	ts := newTestServer(t, func(o *imapd.Options) { o.TLSConfig = cfg })
	bigMailbox(t, ts, 300, 4<<10)
	t.Run("plaintext", func(t *testing.T) {
		r := ts.raw(t)
		r.login("alice", alicePass)
		r.cmd("SELECT INBOX")
		r.send("p1 SEARCH TEXT \"message 299\"\r\np2 NOOP\r\np3 SEARCH SUBJECT \"message 7\"\r\n")
		if out := strings.Join(r.until("p1"), "\n"); !strings.Contains(out, "* SEARCH 300\n") {
			t.Errorf("p1: %s", out)
		}
		if l := last(r.until("p2")); !strings.HasPrefix(l, "p2 OK") {
			t.Errorf("p2: %s", l)
		}
		if out := strings.Join(r.until("p3"), "\n"); !strings.Contains(out, "* SEARCH 8 71 ") {
			t.Errorf("p3: %.200s", out)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		c := ts.tlsInbox(t)
		// Both commands are written before the first answer is read.
		s1 := c.Search(&imap.SearchCriteria{Text: []string{"message 299"}}, nil)
		s2 := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "message 12"}}}, nil)
		d1, err := s1.Wait()
		if err != nil {
			t.Fatal(err)
		}
		d2, err := s2.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if got := d1.AllSeqNums(); len(got) != 1 || got[0] != 300 {
			t.Errorf("TEXT search: %v", got)
		}
		if got := d2.AllSeqNums(); len(got) != 11 || got[0] != 13 {
			t.Errorf("SUBJECT search: %v", got)
		}
	})
}
