package imapd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// wireItems are the data of one FETCH response in the items wireWriter
// writes.
type wireItems struct {
	uid   imap.UID
	flags []imap.Flag
	date  time.Time
	size  int64
	env   *imap.Envelope
}

// encode writes items as wireOne does, with every item asked for.
func (it *wireItems) encode(w *wireWriter) []byte {
	w.buf = nil
	w.message(7)
	w.item(true, "UID")
	w.buf = fmt.Appendf(w.buf, "%d", it.uid)
	w.item(false, "FLAGS")
	w.flags(it.flags)
	w.item(false, "INTERNALDATE")
	w.date(it.date, internalDateLayout)
	w.item(false, "RFC822.SIZE")
	w.buf = fmt.Appendf(w.buf, "%d", it.size)
	w.item(false, "ENVELOPE")
	w.envelope(it.env)
	w.buf = append(w.buf, ")\r\n"...)
	return w.buf
}

// goimapProbe is an IMAP session whose FETCH writes the items it is
// given through go-imap's FetchResponseWriter. Only the methods a LOGIN,
// ENABLE, SELECT and FETCH reach are implemented.
type goimapProbe struct {
	imapserver.Session
	items *wireItems
}

func (p *goimapProbe) Login(string, string) error { return nil }
func (p *goimapProbe) Close() error               { return nil }
func (p *goimapProbe) Poll(*imapserver.UpdateWriter, bool) error {
	return nil
}
func (p *goimapProbe) Select(string, *imap.SelectOptions) (*imap.SelectData, error) {
	return &imap.SelectData{NumMessages: 10, UIDValidity: 1, UIDNext: 100}, nil
}
func (p *goimapProbe) Fetch(w *imapserver.FetchWriter, _ imap.NumSet, _ *imap.FetchOptions) error {
	it := p.items
	rw := w.CreateMessage(7)
	rw.WriteUID(it.uid)
	rw.WriteFlags(it.flags)
	rw.WriteInternalDate(it.date)
	rw.WriteRFC822Size(it.size)
	rw.WriteEnvelope(it.env)
	return rw.Close()
}

// goimapWire is a connection to a go-imap server of goimapProbe
// sessions, to see the octets go-imap writes for given items.
type goimapWire struct {
	c     net.Conn
	r     *bufio.Reader
	probe *goimapProbe
	utf8  bool
}

// newGoimapWire connects to a new probe server; utf8 enables UTF8=ACCEPT
// (go-imap then quotes UTF-8 strings).
func newGoimapWire(t testing.TB, utf8 bool) *goimapWire {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe := &goimapProbe{}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return probe, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: true,
	})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g := &goimapWire{c: c, r: bufio.NewReader(c), probe: probe, utf8: utf8}
	g.line(t) // greeting
	cmds := "a LOGIN u p\r\nb SELECT INBOX\r\n"
	if utf8 {
		cmds = "a LOGIN u p\r\nz ENABLE UTF8=ACCEPT\r\nb SELECT INBOX\r\n"
	}
	if _, err := io.WriteString(c, cmds); err != nil {
		t.Fatal(err)
	}
	for {
		if l := g.line(t); strings.HasPrefix(l, "b ") {
			break
		}
	}
	return g
}

func (g *goimapWire) line(t testing.TB) string {
	g.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := g.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading from go-imap: %v (so far %q)", err, l)
	}
	return l
}

// fetch returns what go-imap writes for items: the untagged response,
// len(want) octets of it (the caller compares), then checks that the
// tagged OK follows.
func (g *goimapWire) fetch(t testing.TB, items *wireItems, want []byte) []byte {
	g.probe.items = items
	if _, err := io.WriteString(g.c, "f FETCH 7 ALL\r\n"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	g.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.ReadFull(g.r, got); err != nil {
		t.Fatalf("reading from go-imap: %v (so far %q, want %q)", err, got[:n], want)
	}
	if l := g.line(t); !strings.HasPrefix(l, "f OK") {
		t.Fatalf("go-imap wrote more than wireWriter:\n got %q\nthen %q", got, l)
	}
	return got
}

func compareWire(t testing.TB, g *goimapWire, items *wireItems) {
	w := &wireWriter{utf8: g.utf8}
	want := items.encode(w)
	got := g.fetch(t, items, want)
	if !bytes.Equal(got, want) {
		t.Fatalf("utf8 %v:\nwireWriter %q\n   go-imap %q", g.utf8, want, got)
	}
}

func TestWireWriterMatchesGoIMAP(t *testing.T) {
	long := strings.Repeat("x", 4097)
	date := time.Date(2024, 1, 8, 7, 4, 30, 0, time.FixedZone("", -(5*3600+30*60)))
	cases := []*wireItems{
		{uid: 1, date: date, env: nil},
		{uid: 4294967295, flags: []imap.Flag{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`, "$Junk", `\Recent`},
			date: time.Date(2001, 12, 1, 0, 0, 0, 0, time.UTC), size: 1 << 40, env: &imap.Envelope{}},
		{uid: 9, flags: []imap.Flag{"¡hola"}, date: date, env: &imap.Envelope{
			Date:      date,
			Subject:   `Re: "quoted" \ back`,
			From:      []imap.Address{{Name: "André", Mailbox: "a", Host: "example.org"}, {Mailbox: "b", Host: "c"}},
			Sender:    []imap.Address{{Name: "S", Mailbox: "s", Host: "t"}},
			To:        []imap.Address{{Name: `x "y"`, Mailbox: "ü", Host: "h"}},
			Cc:        []imap.Address{{Name: "line\r\nbreak", Mailbox: "c", Host: "d"}},
			Bcc:       []imap.Address{{Mailbox: long, Host: "d"}},
			InReplyTo: []string{"p@q", "r@s"}, MessageID: "m@n",
		}},
		{uid: 2, date: date, env: &imap.Envelope{Subject: "日本語 subject", ReplyTo: []imap.Address{{Mailbox: "r", Host: "s"}},
			InReplyTo: []string{"ü@x"}, MessageID: long}},
		{uid: 3, date: date, env: &imap.Envelope{Subject: long, InReplyTo: []string{"a\x00b", `q"@\`}, MessageID: "nul\x00"}},
		{uid: 5, date: date, env: &imap.Envelope{InReplyTo: []string{strings.Repeat("a", 2046), strings.Repeat("b", 2046)}}},
		{uid: 6, date: date, env: &imap.Envelope{InReplyTo: []string{strings.Repeat("a", 2046), strings.Repeat("b", 2045)}}},
	}
	for _, utf8 := range []bool{false, true} {
		g := newGoimapWire(t, utf8)
		for _, c := range cases {
			compareWire(t, g, c)
		}
	}
}

// TestFlagsValid checks flagsValid against go-imap's encoder: a flag it
// refuses makes go-imap fail the response.
func TestFlagsValid(t *testing.T) {
	for _, c := range []struct {
		f  imap.Flag
		ok bool
	}{
		{`\Seen`, true}, {"$Junk", true}, {`\*`, true}, {"¡", true}, {"", false}, {"a b", false},
		{`a\b`, false}, {`\\`, false}, {"x]", false}, {"{", false}, {"%", false}, {"*", false},
		{"\x7f", false}, {"\xc2\x85", false}, {"\t", false},
	} {
		if got := flagsValid([]imap.Flag{c.f}); got != c.ok {
			t.Errorf("flagsValid(%q) = %v, want %v", c.f, got, c.ok)
		}
	}
}

// FuzzWireEnvelope checks that wireWriter writes what go-imap writes for
// the ENVELOPE of any header, with a subject and keyword of any octets,
// with and without UTF8=ACCEPT.
func FuzzWireEnvelope(f *testing.F) {
	f.Add([]byte("Date: Mon, 08 Jan 2024 07:04:30 +0000\r\nFrom: =?UTF-8?Q?Andr=C3=A9?= <a@example.org>\r\nTo: b@example.org, \"C, D\" <c@example.org>\r\nSubject: hi\r\nMessage-ID: <x@y>\r\nIn-Reply-To: <p@q> <r@s>\r\n\r\n"), "", "$Junk", false)
	f.Add([]byte("From: \"x\\\"y\" <a@b>\r\nSubject: caf\xc3\xa9\r\n\r\n"), "", "", true)
	f.Add([]byte("Sender: s@t\r\nReply-To: group: a@b, c@d;\r\nBcc: <e@f>\r\n\r\n"), "two\r\nlines", "x]", false)
	// One server for the whole run: each input costs a round trip only.
	wires := [2]*goimapWire{newGoimapWire(f, false), newGoimapWire(f, true)}
	f.Fuzz(func(t *testing.T, raw []byte, subject, keyword string, utf8 bool) {
		env := envelopeOf(raw)
		if subject != "" {
			env.Subject = subject
			env.MessageID = subject
			env.From = append(env.From, imap.Address{Name: subject, Mailbox: "m", Host: "h"})
		}
		flags := []imap.Flag{`\Seen`}
		if keyword != "" {
			flags = append(flags, imap.Flag(keyword))
		}
		if !flagsValid(flags) {
			flags = flags[:1] // such a message goes through go-imap
		}
		g := wires[0]
		if utf8 {
			g = wires[1]
		}
		// The cached form is what wireWriter writes, with UTF8=ACCEPT
		// too when wireEnvelope says so (it may say no when it is).
		wire, same, _ := wireEnvelope(env, nil)
		for _, u := range []bool{false, true} {
			w := &wireWriter{utf8: u}
			w.envelope(env)
			if (!u || same) && !bytes.Equal(wire, w.buf) {
				t.Fatalf("utf8 %v: wireEnvelope %q, wireWriter %q", u, wire, w.buf)
			}
		}
		compareWire(t, g, &wireItems{uid: 42, flags: flags, date: time.Unix(1700000000, 0).UTC(), size: int64(len(raw)), env: env})
	})
}
