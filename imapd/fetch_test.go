package imapd_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
)

// mimeMessage has every shape FETCH must take apart: encoded headers, a
// preamble and epilogue, quoted-printable and base64 parts and an enclosed
// multipart message. It has LF line endings, as Postfix writes files.
const mimeMessage = `From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>
To: Alice <alice@example.edu>, bob@example.edu
Subject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=
Date: Tue, 24 Nov 2026 10:00:00 +0100
Message-ID: <m1@example.org>
In-Reply-To: <m0@example.org>
X-Folded: first
 second
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 at 10, bring the =
report.
--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

AAECAwQFBgcICQoLDA0ODw==
--outer
Content-Type: message/rfc822

From: carol@example.org
Subject: inner
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

inner plain
--inner
Content-Type: text/html

<p>inner html</p>
--inner--
--outer--
epilogue
`

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func fetchOne(t *testing.T, c *imapclient.Client, seq uint32, opts *imap.FetchOptions) *imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(imap.SeqSetNum(seq), opts).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d messages", len(msgs))
	}
	return msgs[0]
}

// TestFetchSectionsByteExact compares every section with go-imap's own
// extractor run on the CRLF form of the message.
func TestFetchSectionsByteExact(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	ts.deliver(t, "alice", "", mimeMessage)
	c := ts.login(t, "alice")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	full := crlf(mimeMessage)
	sections := []*imap.FetchItemBodySection{
		{}, {Specifier: imap.PartSpecifierHeader}, {Specifier: imap.PartSpecifierText},
		{Part: []int{1}}, {Part: []int{1}, Specifier: imap.PartSpecifierMIME},
		{Part: []int{2}}, {Part: []int{2}, Specifier: imap.PartSpecifierMIME},
		{Part: []int{3}}, {Part: []int{3}, Specifier: imap.PartSpecifierHeader},
		{Part: []int{3}, Specifier: imap.PartSpecifierText},
		{Part: []int{3, 1}}, {Part: []int{3, 2}}, {Part: []int{3, 2}, Specifier: imap.PartSpecifierMIME},
		{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"subject", "X-Folded", "From"}},
		{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject", "x-folded"}},
		{Part: []int{3}, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}},
		{Partial: &imap.SectionPartial{Offset: 10, Size: 25}},
		{Part: []int{3, 1}, Partial: &imap.SectionPartial{Offset: 6, Size: 1000}},
		{Partial: &imap.SectionPartial{Offset: 100000, Size: 10}},
	}
	for _, sec := range sections {
		sec.Peek = true
		msg := fetchOne(t, c, 1, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}})
		got := msg.FindBodySection(sec)
		want := imapserver.ExtractBodySection(strings.NewReader(full), sec)
		if len(sec.HeaderFields) > 0 || len(sec.HeaderFieldsNot) > 0 {
			want = bytes.ReplaceAll(want, []byte("\r\n second"), []byte("\r\n second")) // folded lines stay as they were
		}
		if !bytes.Equal(got, want) {
			t.Errorf("BODY[%v %s %v%v]<%v>:\n got %q\nwant %q", sec.Part, sec.Specifier, sec.HeaderFields, sec.HeaderFieldsNot, sec.Partial, got, want)
		}
	}
	// The whole message is the file with CRLF line endings, octet for octet.
	msg := fetchOne(t, c, 1, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	if got := msg.FindBodySection(&imap.FetchItemBodySection{}); string(got) != full || msg.RFC822Size != int64(len(full)) {
		t.Errorf("BODY[] differs from the CRLF message (size %d, want %d)", msg.RFC822Size, len(full))
	}
}

func TestFetchBinary(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	ts.deliver(t, "alice", "", mimeMessage)
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	out := strings.Join(r.cmd("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.SIZE[1] BINARY.PEEK[1])"), "\n")
	want := "BINARY[2] ~{16}" + string([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	if !strings.Contains(out, want) || !strings.Contains(out, "BINARY.SIZE[2] 16") ||
		!strings.Contains(out, "BINARY[1] ~{29}Caf\xe9 at 10, bring the report.") || !strings.Contains(out, "BINARY.SIZE[1] 29") {
		t.Errorf("BINARY:\n%q", out)
	}
	if l := last(r.cmd("FETCH 1 BINARY.PEEK[2]<4.3>")); !strings.Contains(l, "OK") {
		t.Error(l)
	}
}

func TestFetchEnvelopeAndStructure(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	ts.deliver(t, "alice", "", mimeMessage)
	c := ts.login(t, "alice")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ { // second round comes from the cache
		msg := fetchOne(t, c, 1, &imap.FetchOptions{Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, UID: true, Flags: true, InternalDate: true})
		env := msg.Envelope
		if env.Subject != "Café meeting" || len(env.From) != 1 || env.From[0].Name != "André" || env.From[0].Addr() != "andre@example.org" ||
			len(env.To) != 2 || env.MessageID != "m1@example.org" || len(env.InReplyTo) != 1 || env.Date.IsZero() {
			t.Fatalf("envelope: %+v", env)
		}
		mp, ok := msg.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || mp.Subtype != "mixed" || len(mp.Children) != 3 {
			t.Fatalf("structure: %#v", msg.BodyStructure)
		}
		text := mp.Children[0].(*imap.BodyStructureSinglePart)
		if text.Type != "text" || text.Params["charset"] != "iso-8859-1" || text.Encoding != "quoted-printable" ||
			text.Size != uint32(len("Caf=E9 at 10, bring the =\r\nreport.")) || text.Text.NumLines != 2 {
			t.Errorf("text part: %+v %+v", text, text.Text)
		}
		att := mp.Children[1].(*imap.BodyStructureSinglePart)
		if att.Disposition() == nil || att.Disposition().Params["filename"] != "data.bin" || att.Encoding != "base64" {
			t.Errorf("attachment: %+v", att)
		}
		inner := mp.Children[2].(*imap.BodyStructureSinglePart)
		if inner.MessageRFC822 == nil || inner.MessageRFC822.Envelope.Subject != "inner" ||
			inner.MessageRFC822.BodyStructure.MediaType() != "multipart/alternative" {
			t.Errorf("enclosed message: %+v", inner)
		}
	}
}

func TestFetchSetsSeenExceptReadOnly(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	ts.deliver(t, "alice", "", "Subject: s\n\nx\n")
	r := ts.raw(t)
	r.login("alice", alicePass)
	if l := last(r.cmd("EXAMINE INBOX")); !strings.Contains(l, "[READ-ONLY]") {
		t.Fatal(l)
	}
	out := strings.Join(r.cmd("FETCH 1 (BODY[] FLAGS)"), "\n")
	if strings.Contains(out, `\Seen`) {
		t.Fatalf("EXAMINE set \\Seen:\n%s", out)
	}
	for _, cmd := range []string{`STORE 1 +FLAGS (\Deleted)`, "EXPUNGE", "MOVE 1 Trash"} {
		if l := last(r.cmd(cmd)); !strings.Contains(l, "NO") {
			t.Errorf("%s in EXAMINE: %s", cmd, l)
		}
	}
	if l := last(r.cmd("CLOSE")); !strings.Contains(l, "OK") {
		t.Errorf("CLOSE after EXAMINE: %s", l)
	}
	r.cmd("SELECT INBOX")
	out = strings.Join(r.cmd("FETCH 1 BODY[TEXT]"), "\n")
	if !strings.Contains(out, `FLAGS (\Seen)`) {
		t.Fatalf("FETCH BODY[] did not report \\Seen:\n%s", out)
	}
	out = strings.Join(r.cmd("FETCH 1 (FLAGS RFC822.HEADER RFC822.TEXT RFC822 RFC822.SIZE)"), "\n")
	for _, want := range []string{"RFC822.HEADER {14}", "RFC822.TEXT {3}", "RFC822 {17}", "RFC822.SIZE 17"} {
		if !strings.Contains(out, want) {
			t.Errorf("FETCH lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(r.cmd("FETCH 1 ALL"), "\n")
	if !strings.Contains(out, "INTERNALDATE") || !strings.Contains(out, "ENVELOPE") {
		t.Errorf("FETCH ALL:\n%s", out)
	}
}

// A message without a header/body separator, one with CR-less line ends
// after conversion, and an empty one must not break FETCH.
func TestFetchOddMessages(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	for _, m := range []string{"Subject: only a header\n", "", "no header line at all\n\nbody\n",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nunterminated\n"} {
		ts.deliver(t, "alice", "", m)
	}
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	for _, cmd := range []string{"FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[TEXT] BODY.PEEK[HEADER])", "FETCH 1:* BODY"} {
		if l := last(r.cmd(cmd)); !strings.Contains(l, "OK") {
			t.Errorf("%s: %s", cmd, l)
		}
	}
	_ = fmt.Sprint()
}

// removeMessageFile deletes the file of user's INBOX message whose content
// contains marker, as another process (a POP3 client, mutt) would.
func removeMessageFile(t *testing.T, ts *testServer, user, marker string) {
	t.Helper()
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(ts.maildir(user), sub)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), marker) {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no message file contains %q", marker)
}

// A message whose file another process removed after SELECT is never sent
// with an empty or made-up body: it is left out and FETCH answers
// NO [EXPUNGEISSUED] (RFC 2180 4.1), while the other messages are sent
// whole — whether or not its ENVELOPE was cached before.
func TestFetchRemovedFile(t *testing.T) {
	for _, cached := range []bool{false, true} {
		t.Run(fmt.Sprintf("cached=%v", cached), func(t *testing.T) {
			ts := newTestServer(t, closingStore(t))
			first := "Subject: first\nMessage-ID: <first@example.org>\n\nfirst body\n"
			second := "Subject: second\nMessage-ID: <second@example.org>\n\nsecond body\n"
			ts.deliver(t, "alice", "", first)
			ts.deliver(t, "alice", "", second)
			r := ts.raw(t)
			r.login("alice", alicePass)
			r.cmd("SELECT INBOX")
			if cached {
				if l := last(r.cmd("FETCH 1:2 (ENVELOPE BODY.PEEK[HEADER])")); !strings.Contains(l, "OK") {
					t.Fatalf("FETCH ENVELOPE: %s", l)
				}
			}
			removeMessageFile(t, ts, "alice", "first body")
			for _, items := range []string{"BODY.PEEK[]", "BODY.PEEK[TEXT]", "(ENVELOPE BODY.PEEK[HEADER])", "BINARY.PEEK[]", "RFC822"} {
				lines := r.cmd("FETCH 1:2 " + items)
				out := strings.Join(lines, "\n")
				if l := last(lines); !strings.Contains(l, "NO [EXPUNGEISSUED]") {
					t.Errorf("FETCH 1:2 %s with message 1's file gone: %s", items, l)
				}
				for _, l := range lines {
					if strings.HasPrefix(l, "* 1 FETCH") && strings.Contains(l, "{") {
						t.Errorf("FETCH 1:2 %s sent content for the removed message: %q", items, l)
					}
				}
				if !strings.Contains(out, "* 2 FETCH") || !strings.Contains(out, "second") {
					t.Errorf("FETCH 1:2 %s lost message 2:\n%s", items, out)
				}
			}
			// The session goes on; NOOP reports the expunge.
			if out := strings.Join(r.cmd("NOOP"), "\n"); !strings.Contains(out, "* 1 EXPUNGE") {
				t.Errorf("NOOP after the removal:\n%s", out)
			}
		})
	}
}

// A file cut short in place after its size was recorded (no Maildir writer
// does this) can end after its literal's size was sent: the connection is
// closed rather than the literal padded with bytes that were never in the
// message.
func TestFetchTruncatedFileClosesConnection(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	body := strings.Repeat("a line of the body that will be cut\n", 200)
	ts.deliver(t, "alice", "", "Subject: cut\n\n"+body)
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	// The store measures a file Postfix wrote on demand (or in the
	// background): have it record the size before the file is cut.
	if out := strings.Join(r.cmd("FETCH 1 RFC822.SIZE"), "\n"); !strings.Contains(out, "RFC822.SIZE 7416") {
		t.Fatalf("FETCH RFC822.SIZE:\n%s", out)
	}
	var path string
	for _, sub := range []string{"new", "cur"} {
		if m, _ := filepath.Glob(filepath.Join(ts.maildir("alice"), sub, "*")); len(m) == 1 {
			path = m[0]
		}
	}
	if err := os.Truncate(path, 100); err != nil {
		t.Fatal(err)
	}
	r.send("t9 FETCH 1 BODY.PEEK[]\r\n")
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(r.br)
	if err != nil {
		t.Fatalf("the connection was not closed: %v after %q", err, got)
	}
	if strings.Contains(string(got), "t9 OK") || strings.Contains(string(got), "      ") {
		t.Errorf("a cut message was answered as if whole:\n%q", got)
	}
	if !strings.Contains(ts.logs.String(), "shorter than its recorded size") {
		t.Errorf("nothing logged:\n%s", ts.logs.String())
	}
}

// TestFetchManyInOrder: a FETCH over many messages, from the cache and
// from the files, answers in order with each message's own data, and
// leaves out only the one whose file was removed.
func TestFetchManyInOrder(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	const n = 150
	for i := 1; i <= n; i++ {
		ts.deliver(t, "alice", "", fmt.Sprintf("Subject: number %d\nMessage-ID: <m%d@example.org>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\npart of %d\n--b--\n", i, i, i))
	}
	c := ts.login(t, "alice")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	all := imap.SeqSet{{Start: 1, Stop: 0}}
	// Sequence numbers follow UIDs, which follow delivery order here.
	check := func(msgs []*imapclient.FetchMessageBuffer, skip string) {
		t.Helper()
		want := 1
		for _, m := range msgs {
			if fmt.Sprintf("<m%d@example.org>", want) == skip {
				want++
			}
			if m.Envelope == nil || m.Envelope.Subject != fmt.Sprintf("number %d", want) || m.SeqNum != uint32(want) {
				t.Fatalf("message %d: %+v", want, m.Envelope)
			}
			if mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart); !ok || len(mp.Children) != 1 {
				t.Fatalf("message %d: BODYSTRUCTURE %#v", want, m.BodyStructure)
			}
			want++
		}
		if want != n+1 {
			t.Fatalf("%d messages", want-1)
		}
	}
	opts := &imap.FetchOptions{Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}}
	msgs, err := c.Fetch(all, opts).Collect()
	if err != nil {
		t.Fatal(err)
	}
	check(msgs, "")

	// A fresh server (nothing cached) reads every file, one of them gone.
	ts2 := newTestServer(t, closingStore(t))
	for i := 1; i <= n; i++ {
		ts2.deliver(t, "alice", "", fmt.Sprintf("Subject: number %d\nMessage-ID: <m%d@example.org>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\npart of %d\n--b--\n", i, i, i))
	}
	c2 := ts2.login(t, "alice")
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	removeMessageFile(t, ts2, "alice", "<m77@example.org>")
	cmd := c2.Fetch(all, opts)
	var got []*imapclient.FetchMessageBuffer
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		buf, err := m.Collect()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf)
	}
	if err := cmd.Close(); err == nil || !strings.Contains(err.Error(), "EXPUNGEISSUED") {
		t.Fatalf("FETCH with a removed file: %v", err)
	}
	check(got, "<m77@example.org>")
}

// TestFetchFlagsToldOnce: FLAGS another session changed reach the client
// once. A FETCH that returns them (through imapd's own writer or
// go-imap's) records that the client knows them, so neither the update
// after the FETCH nor the next NOOP repeats them.
func TestFetchFlagsToldOnce(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: one\n\n1\n")
	ts.deliver(t, "alice", "", "Subject: two\n\n2\n")
	for _, items := range []string{"(FLAGS)", "(FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])"} {
		a, b := ts.raw(t), ts.raw(t)
		a.login("alice", alicePass)
		b.login("alice", alicePass)
		a.cmd("SELECT INBOX")
		b.cmd("SELECT INBOX")
		b.cmd(`STORE 2 FLAGS (\Flagged)`)
		out := strings.Join(a.cmd("FETCH 2 "+items), "\n")
		if n := strings.Count(out, "* 2 FETCH"); n != 1 || !strings.Contains(out, `\Flagged`) {
			t.Errorf("FETCH 2 %s after another session's STORE: %d responses for 2:\n%s", items, n, out)
		}
		if out := strings.Join(a.cmd("NOOP"), "\n"); strings.Contains(out, "FETCH") {
			t.Errorf("NOOP after FETCH %s repeats the flags:\n%s", items, out)
		}
		b.cmd(`STORE 2 FLAGS ()`)
		a.cmd("NOOP")
	}
}
