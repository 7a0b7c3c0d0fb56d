package imapd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/backend/storetest"
	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/internal/testenv"
)

// sizeMessages are the messages the size tests serve: MIME parts, odd
// shapes, line ends to convert and a big one.
var sizeMessages = []string{
	mimeMessage,
	"Subject: only a header\n",
	"",
	"no header line at all\n\nbody\n",
	"From: carol@example.org\r\nSubject: CRLF already\r\n\r\nmixed\nline\r\nends\n",
	"From: dave@example.net\nSubject: binary\nContent-Transfer-Encoding: base64\n\nAAECAwQFBgcICQoLDA0ODw==\n",
	"From: erin@example.com\nSubject: big\n\n" + strings.Repeat("a line of a long message body\n", 8000),
}

// unmeasuredPair delivers sizeMessages to alice as Postfix does (no size
// in the file names) and returns two servers on that Maildir: one whose
// snapshots have every size (a storetest.SizeHider hiding none), and one whose
// snapshots report -1 for the messages hide picks (every one if nil).
func unmeasuredPair(t *testing.T, hide func(backend.Message) bool) (known, unknown *testServer, us *storetest.SizeHider) {
	t.Helper()
	return unmeasuredPairOf(t, hide, sizeMessages...)
}

// unmeasuredPairOf is unmeasuredPair with msgs for messages.
func unmeasuredPairOf(t *testing.T, hide func(backend.Message) bool, msgs ...string) (known, unknown *testServer, us *storetest.SizeHider) {
	t.Helper()
	var a auth.Authenticator
	known = newTestServer(t, func(o *imapd.Options) {
		closeAtEnd(t, o.Store)
		a = o.Auth
		o.Store = &storetest.SizeHider{Store: o.Store, Hide: measureAll}
	})
	for _, m := range msgs {
		known.deliver(t, "alice", "", m)
	}
	unknown = newTestServer(t, func(o *imapd.Options) {
		closeAtEnd(t, o.Store)
		us = &storetest.SizeHider{Store: o.Store, Hide: hide}
		o.Store, o.Auth = us, a
	})
	return known, unknown, us
}

// closingStore is a newTestServer tweak: closeAtEnd for its store.
func closingStore(t *testing.T) func(*imapd.Options) {
	return func(o *imapd.Options) { closeAtEnd(t, o.Store) }
}

// closeAtEnd closes store when t ends, after the server (whose clean-up
// registers later, so runs earlier) and before the Maildir is removed: the
// store's background measurer must not write into a directory being
// removed.
func closeAtEnd(t *testing.T, store backend.Store) {
	if c, ok := store.(io.Closer); ok {
		t.Cleanup(func() { c.Close() })
	}
}

// measureAll hides no size.
func measureAll(backend.Message) bool { return false }

// sizeCommands need sizes (counted: one MessageSize per message).
var sizeCommands = []string{
	"FETCH 1:* (UID FLAGS RFC822.SIZE)",
	"FETCH 1:* FAST",
	"FETCH 1:* ALL",
	"FETCH 1:* FULL",
	"FETCH 1:* RFC822",
	"FETCH 1:* RFC822.TEXT",
	"FETCH 1:* (RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT] BINARY.PEEK[] BINARY.SIZE[])",
	"FETCH 1:* BODY.PEEK[]<0.10>",
	"FETCH 1:* BODY.PEEK[]<5.100000>",
	"FETCH 1:* BODY.PEEK[]<100000.10>",
	"FETCH 1:* BODY.PEEK[TEXT]<3.20>",
	"FETCH 1:* BINARY.PEEK[]<2.7>",
	"UID FETCH 1:* (RFC822.SIZE ENVELOPE)",
	"SEARCH LARGER 100",
	"SEARCH SMALLER 100",
	"SEARCH NOT LARGER 500",
	"SEARCH OR LARGER 200000 SMALLER 30",
	"SEARCH LARGER 1 SMALLER 30",
	"SEARCH RETURN (MIN MAX COUNT) LARGER 200",
	"UID SEARCH SMALLER 1000 NOT FROM carol",
}

// noSizeCommands must not ask the store for a single size.
var noSizeCommands = []string{
	"FETCH 1:* (UID FLAGS)",
	"FETCH 1:* (ENVELOPE INTERNALDATE)",
	"FETCH 1:* (BODYSTRUCTURE BODY.PEEK[HEADER] RFC822.HEADER)",
	"FETCH 1:* (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[3.TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
	"FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[2])",
	"SEARCH FROM carol",
	"SEARCH UNSEEN SINCE 1-Jan-2000",
	"SEARCH BODY line",
	"STATUS INBOX (MESSAGES SIZE)",
}

// TestUnmeasuredSizesAnswerAlike: a client cannot tell a store that has
// not measured sizes from one that has: every FETCH and SEARCH that uses
// sizes answers byte for byte alike, each asks MessageSize once per
// unmeasured message, and the items that need no size (FLAGS, ENVELOPE,
// BODYSTRUCTURE, headers, parts, SEARCH on other keys) ask it never.
// STATUS SIZE, which the store sums, is exact too.
func TestUnmeasuredSizesAnswerAlike(t *testing.T) {
	for _, tc := range []struct {
		name string
		hide func(backend.Message) bool
	}{
		{"all unmeasured", nil},
		{"odd UIDs unmeasured", func(m backend.Message) bool { return m.UID%2 == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			known, unknown, us := unmeasuredPair(t, tc.hide)
			unmeasured := int64(len(sizeMessages))
			if tc.hide != nil {
				unmeasured = int64(len(sizeMessages)+1) / 2
			}
			rk, ru := known.raw(t), unknown.raw(t)
			for _, r := range []*raw{rk, ru} {
				r.login("alice", alicePass)
				if l := last(r.cmd("EXAMINE INBOX")); !strings.Contains(l, "OK") {
					t.Fatal(l)
				}
			}
			for _, cmd := range append(append([]string{}, sizeCommands...), noSizeCommands...) {
				before := us.Calls.Load()
				want := strings.Join(rk.cmd(cmd), "\r\n")
				got := strings.Join(ru.cmd(cmd), "\r\n")
				if got != want {
					t.Errorf("%s: unmeasured sizes answer\n%.2000q\nmeasured sizes answer\n%.2000q", cmd, got, want)
				}
				if !strings.Contains(last(strings.Split(got, "\r\n")), " OK ") {
					t.Errorf("%s: %s", cmd, last(strings.Split(got, "\r\n")))
				}
				calls, needs := us.Calls.Load()-before, slices.Contains(sizeCommands, cmd)
				search := strings.Contains(cmd, "SEARCH")
				switch {
				case needs && search && calls > unmeasured: // a message failing a cheaper key is not measured
					t.Errorf("%s: %d MessageSize calls for %d unmeasured messages", cmd, calls, unmeasured)
				case needs && !search && calls != unmeasured:
					t.Errorf("%s: %d MessageSize calls, want one per unmeasured message (%d)", cmd, calls, unmeasured)
				case !needs && calls != 0:
					t.Errorf("%s: %d MessageSize calls, want none", cmd, calls)
				}
			}
			// STATUS SIZE is the sum of the CRLF sizes.
			var sum int
			for _, m := range sizeMessages {
				sum += len(crlfAny(m))
			}
			if out := strings.Join(ru.cmd("STATUS INBOX (SIZE)"), "\n"); !strings.Contains(out, "SIZE "+strconv.Itoa(sum)+")") {
				t.Errorf("STATUS SIZE with unmeasured sizes: %s, want %d", out, sum)
			}
		})
	}
}

// TestStatusWithoutSizeMeasuresNothing: STATUS and LIST-STATUS without
// SIZE count from a snapshot, so that a client polling folders never makes
// the store read unmeasured messages; with SIZE they ask the store, which
// sums exact sizes.
func TestStatusWithoutSizeMeasuresNothing(t *testing.T) {
	_, unknown, us := unmeasuredPair(t, nil)
	r := unknown.raw(t)
	r.login("alice", alicePass)
	for _, tc := range []struct {
		cmd, want string
		statuses  int64
	}{
		{"STATUS INBOX (MESSAGES UNSEEN DELETED UIDNEXT UIDVALIDITY)", "UNSEEN " + strconv.Itoa(len(sizeMessages)) + " DELETED 0", 0},
		{`LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))`, "MESSAGES " + strconv.Itoa(len(sizeMessages)), 0},
		{"STATUS INBOX (MESSAGES SIZE)", "SIZE ", 1},
	} {
		before, calls := us.Statuses.Load(), us.Calls.Load()
		out := strings.Join(r.cmd(tc.cmd), "\n")
		if !strings.Contains(out, tc.want) || !strings.Contains(last(strings.Split(out, "\n")), " OK ") {
			t.Errorf("%s:\n%s\nwant %q", tc.cmd, out, tc.want)
		}
		if n := us.Statuses.Load() - before; n != tc.statuses {
			t.Errorf("%s: %d Status calls, want %d", tc.cmd, n, tc.statuses)
		}
		if n := us.Calls.Load() - calls; n != 0 {
			t.Errorf("%s: %d MessageSize calls, want none", tc.cmd, n)
		}
	}
}

// TestUnmeasuredSizeSetsSeen: FETCH RFC822 in a selected mailbox sets
// \Seen and takes the message from the store's answer to SetFlags, whose
// size may be unmeasured too: the literal and RFC822.SIZE are still the
// message's CRLF octets.
func TestUnmeasuredSizeSetsSeen(t *testing.T) {
	_, unknown, us := unmeasuredPair(t, nil)
	c := unknown.login(t, "alice")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sec := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(sizeMessages) {
		t.Fatalf("%d messages, want %d", len(msgs), len(sizeMessages))
	}
	for i, m := range msgs {
		want := crlfAny(sizeMessages[i])
		if got := m.FindBodySection(sec); string(got) != want || m.RFC822Size != int64(len(want)) {
			t.Errorf("message %d: RFC822.SIZE %d and %d octets, want %d", i+1, m.RFC822Size, len(got), len(want))
		}
		if !slices.Contains(m.Flags, imap.FlagSeen) {
			t.Errorf("message %d: flags %v after FETCH BODY[]", i+1, m.Flags)
		}
	}
	if n := us.Calls.Load(); n != int64(len(sizeMessages)) {
		t.Errorf("%d MessageSize calls, want %d", n, len(sizeMessages))
	}
}

// TestUnmeasuredSizeOfExpungedMessage: a message expunged just before the
// store measures it (MessageSize says ErrNoSuchMessage) is handled like a
// message whose file vanished: FETCH leaves it out and answers
// NO [EXPUNGEISSUED], sending the others whole; SEARCH LARGER/SMALLER does
// not match it; the next NOOP reports the EXPUNGE.
func TestUnmeasuredSizeOfExpungedMessage(t *testing.T) {
	for _, cmd := range []string{"FETCH 1:* RFC822.SIZE", "FETCH 1:* (FLAGS BODY.PEEK[])", "FETCH 1:* BINARY.SIZE[]", "SEARCH LARGER 1", "SEARCH SMALLER 1000000"} {
		t.Run(cmd, func(t *testing.T) {
			_, unknown, us := unmeasuredPair(t, nil)
			us.Before = func(mb backend.Mailbox, uid backend.UID) error {
				if uid == 2 {
					_, err := mb.Expunge(context.Background(), []backend.UID{uid})
					return err
				}
				return nil
			}
			r := unknown.raw(t)
			r.login("alice", alicePass)
			r.cmd("SELECT INBOX")
			lines := r.cmd(cmd)
			out := strings.Join(lines, "\n")
			if strings.HasPrefix(cmd, "SEARCH") {
				want := "* SEARCH 1 3 4 5 6 7" // message 2 is gone
				if strings.Contains(cmd, "LARGER") {
					want = "* SEARCH 1 4 5 6 7" // and message 3 is empty
				}
				if !strings.Contains(out, want+"\n") || !strings.Contains(last(lines), "OK") {
					t.Errorf("%s with message 2 expunged before its size was measured:\n%s\nwant %s", cmd, out, want)
				}
			} else {
				if !strings.Contains(last(lines), "NO [EXPUNGEISSUED]") {
					t.Errorf("%s: %s", cmd, last(lines))
				}
				if strings.Contains(out, "* 2 FETCH") {
					t.Errorf("%s sent the expunged message:\n%.500s", cmd, out)
				}
				for _, seq := range []int{1, 3, 4, 5, 6, 7} {
					if !strings.Contains(out, fmt.Sprintf("* %d FETCH", seq)) {
						t.Errorf("%s lost message %d:\n%.500s", cmd, seq, out)
					}
				}
				if strings.Contains(cmd, "BODY") && !strings.Contains(out, strings.Repeat("a line of a long message body\r\n", 8000)) {
					t.Errorf("%s: the big message was not sent whole", cmd)
				}
			}
			if out := strings.Join(r.cmd("NOOP"), "\n"); !regexp.MustCompile(`(?m)^\* 2 EXPUNGE$`).MatchString(out) {
				t.Errorf("NOOP after the expunge:\n%s", out)
			}
		})
	}
}

// TestUnmeasuredSizeUnreadable: when the store cannot say a size (an I/O
// error, not an expunge), FETCH and SEARCH answer NO and log the error
// rather than send a wrong size or a wrong result; FLAGS still work, and
// so does everything once the store answers again.
func TestUnmeasuredSizeUnreadable(t *testing.T) {
	_, unknown, us := unmeasuredPair(t, nil)
	us.Before = func(backend.Mailbox, backend.UID) error { return errors.New("disk on fire") }
	r := unknown.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	for _, cmd := range []string{"FETCH 1 RFC822.SIZE", "FETCH 1:* BODY.PEEK[]", "SEARCH LARGER 10"} {
		lines := r.cmd(cmd)
		if l := last(lines); !strings.Contains(l, "NO [SERVERBUG]") {
			t.Errorf("%s with the store failing: %s", cmd, l)
		}
		if len(lines) != 1 {
			t.Errorf("%s with the store failing sent %q", cmd, lines)
		}
	}
	if !strings.Contains(unknown.logs.String(), "disk on fire") {
		t.Errorf("the store's error was not logged:\n%s", unknown.logs)
	}
	if l := last(r.cmd("FETCH 1:* FLAGS")); !strings.Contains(l, "OK") {
		t.Errorf("FETCH FLAGS: %s", l)
	}
	us.Before = nil
	if out := strings.Join(r.cmd("SEARCH LARGER 10"), "\n"); !strings.Contains(out, "* SEARCH 1 2 4 5 6 7\n") {
		t.Errorf("SEARCH once the store answers:\n%s", out)
	}
}

// TestUnmeasuredSizesConcurrent: sessions measuring the same messages at
// the same time (the race detector watches) all get the exact sizes.
func TestUnmeasuredSizesConcurrent(t *testing.T) {
	_, unknown, _ := unmeasuredPair(t, nil)
	var wg sync.WaitGroup
	for range 4 {
		c := unknown.login(t, "alice")
		wg.Go(func() {
			if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
				t.Error(err)
				return
			}
			sec := &imap.FetchItemBodySection{Peek: true}
			for range 3 {
				msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
				if err != nil {
					t.Error(err)
					return
				}
				for i, m := range msgs {
					if want := crlfAny(sizeMessages[i]); m.RFC822Size != int64(len(want)) || string(m.FindBodySection(sec)) != want {
						t.Errorf("message %d: RFC822.SIZE %d, want %d", i+1, m.RFC822Size, len(want))
					}
				}
				data, err := c.Search(&imap.SearchCriteria{Larger: 1}, nil).Wait()
				if err != nil || len(data.AllSeqNums()) != len(sizeMessages)-1 {
					t.Errorf("SEARCH LARGER 1: %v %v", data.AllSeqNums(), err)
				}
			}
		})
	}
	wg.Wait()
}

// TestUnmeasuredSizesImaplib: Python's imaplib gets the same FETCH and
// SEARCH answers over unmeasured sizes as over measured ones.
func TestUnmeasuredSizesImaplib(t *testing.T) {
	py := testenv.Require(t, "python3", "python3")
	known, unknown, us := unmeasuredPair(t, func(m backend.Message) bool { return m.UID != 3 })
	script := `
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], sys.argv[4])
m.select("INBOX", readonly=True)
print(m.fetch("1:*", "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT]<2.40>)"))
print(m.fetch("1:*", "(FLAGS RFC822.SIZE)"))
print(m.uid("SEARCH", "LARGER", "100"))
print(m.search(None, "SMALLER", "100"))
m.logout()
`
	run := func(ts *testServer) string {
		host, port := splitAddr(t, ts.addr)
		out, err := exec.Command(py, "-c", script, host, port, "alice", alicePass).CombinedOutput()
		if err != nil {
			t.Fatalf("imaplib: %v\n%s", err, out)
		}
		return string(out)
	}
	want, got := run(known), run(unknown)
	if got != want {
		t.Errorf("imaplib over unmeasured sizes:\n%.2000s\nover measured sizes:\n%.2000s", got, want)
	}
	if !strings.Contains(got, "RFC822.SIZE "+strconv.Itoa(len(crlfAny(sizeMessages[6])))) {
		t.Errorf("imaplib: no RFC822.SIZE of the big message in\n%.1000s", got)
	}
	if n := us.Calls.Load(); n != int64(4*(len(sizeMessages)-1)) {
		t.Errorf("%d MessageSize calls, want one per unmeasured message (%d) for each of the 4 commands", n, len(sizeMessages)-1)
	}
}

// crlfAny is m with every line end CRLF, as the store serves it.
func crlfAny(m string) string {
	return strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
}

// TestUnmeasuredSizesAsDovecot: over sizes it has not measured, Roost
// answers RFC822.SIZE, BODY[], BODY[TEXT] and SEARCH LARGER/SMALLER as
// Dovecot 2.3 does for the same messages (Dovecot's own copies are
// appended; Roost's are files as Postfix writes them).
func TestUnmeasuredSizesAsDovecot(t *testing.T) {
	dcAddr := startDovecot(t)
	msgs := slices.DeleteFunc(slices.Clone(sizeMessages), func(m string) bool { return m == "" }) // APPEND needs an octet
	_, unknown, us := unmeasuredPairOf(t, nil, msgs...)
	dc := (&testServer{addr: dcAddr}).login(t, "alice")
	for _, m := range msgs {
		cmd := dc.Append("INBOX", int64(len(crlfAny(m))), nil)
		if _, err := cmd.Write([]byte(crlfAny(m))); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	answers := func(c *imapclient.Client) string {
		t.Helper()
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			t.Fatal(err)
		}
		whole, text := &imap.FetchItemBodySection{Peek: true}, &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierText}
		fetched, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{whole, text}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, m := range fetched {
			fmt.Fprintf(&b, "%d: RFC822.SIZE %d BODY[] %q BODY[TEXT] %q\n", m.SeqNum, m.RFC822Size, m.FindBodySection(whole), m.FindBodySection(text))
		}
		for _, crit := range []imap.SearchCriteria{{Larger: 100}, {Smaller: 100}, {Larger: 30, Smaller: 1000}} {
			data, err := c.Search(&crit, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "SEARCH LARGER %d SMALLER %d: %v\n", crit.Larger, crit.Smaller, data.AllSeqNums())
		}
		return b.String()
	}
	want := answers(dc)
	if got := answers(unknown.login(t, "alice")); got != want {
		t.Errorf("Roost over unmeasured sizes:\n%.3000s\nDovecot:\n%.3000s", got, want)
	}
	if us.Calls.Load() == 0 {
		t.Error("Roost measured no size")
	}
}

// TestUnmeasuredSizeExpungedInView: a message another session expunged
// stays in this session's view until its next command may report it; a
// FETCH that needs its size, unknown, leaves it out (NO [EXPUNGEISSUED])
// without asking the store, and SEARCH LARGER does not match it.
func TestUnmeasuredSizeExpungedInView(t *testing.T) {
	_, unknown, us := unmeasuredPair(t, nil)
	r, other := unknown.raw(t), unknown.raw(t)
	for _, c := range []*raw{r, other} {
		c.login("alice", alicePass)
		c.cmd("SELECT INBOX")
	}
	other.cmd(`STORE 2 +FLAGS.SILENT (\Deleted)`)
	if l := last(other.cmd("EXPUNGE")); !strings.Contains(l, "OK") {
		t.Fatal(l)
	}
	before := us.Calls.Load()
	lines := r.cmd("FETCH 1:* (FLAGS RFC822.SIZE)")
	out := strings.Join(lines, "\n")
	if !strings.Contains(last(lines), "NO [EXPUNGEISSUED]") || strings.Contains(out, "* 2 FETCH") || !strings.Contains(out, "* 7 FETCH") {
		t.Errorf("FETCH with message 2 expunged by another session:\n%.1000s", out)
	}
	if n := us.Calls.Load() - before; n != int64(len(sizeMessages)-1) {
		t.Errorf("%d MessageSize calls, want %d: none for the expunged message", n, len(sizeMessages)-1)
	}
	if out := strings.Join(r.cmd("SEARCH LARGER 1"), "\n"); !strings.Contains(out, "* SEARCH 1 4 5 6 7\n") {
		t.Errorf("SEARCH LARGER 1 with message 2 expunged:\n%s", out)
	}
}
