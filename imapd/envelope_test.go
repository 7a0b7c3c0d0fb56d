package imapd

import (
	"bytes"
	"io"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomail "github.com/emersion/go-message/mail"
)

// refHeaderEnd is the header block length by its definition: every line
// up to and including the first empty one ("\n" or "\r\n").
func refHeaderEnd(msg []byte) int {
	n := 0
	for _, line := range bytes.SplitAfter(msg, []byte("\n")) {
		n += len(line)
		if string(line) == "\n" || string(line) == "\r\n" {
			break
		}
	}
	return n
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"), uint8(0))
	f.Add([]byte("\r\nbody"), uint8(1))
	f.Add([]byte("A: b\n\nc"), uint8(2))
	f.Add([]byte("A: b\r\n c\r\r\n\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, msg []byte, mode uint8) {
		var r io.Reader = bytes.NewReader(msg)
		switch mode % 3 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = iotest.HalfReader(r)
		}
		var buf []byte
		if mode&4 != 0 {
			buf = make([]byte, 0, 3) // grown from a tiny buffer
		}
		hdr, n, _, err := readHeaderInto(r, buf)
		if err != nil {
			t.Fatal(err)
		}
		want := refHeaderEnd(msg)
		if n != int64(want) || !bytes.Equal(hdr, msg[:min(want, maxHeaderBytes)]) {
			t.Fatalf("header of %q: %d octets %q, want %d", msg, n, hdr, want)
		}
	})
}

// TestReadHeaderBeyondLimit: a header longer than maxHeaderBytes is
// counted whole and kept up to the limit.
func TestReadHeaderBeyondLimit(t *testing.T) {
	var msg bytes.Buffer
	for msg.Len() < maxHeaderBytes+100<<10 {
		msg.WriteString("X-Long: 0123456789012345678901234567890123456789\r\n")
	}
	hlen := msg.Len() + 2
	msg.WriteString("\r\nbody\r\n")
	for _, r := range []io.Reader{bytes.NewReader(msg.Bytes()), iotest.HalfReader(bytes.NewReader(msg.Bytes()))} {
		hdr, n, _, err := readHeaderInto(r, nil)
		if err != nil || n != int64(hlen) || len(hdr) != maxHeaderBytes || !bytes.Equal(hdr, msg.Bytes()[:maxHeaderBytes]) {
			t.Fatalf("got %d octets, %d kept, %v; want %d, %d", n, len(hdr), err, hlen, maxHeaderBytes)
		}
	}
}

// FuzzEnvelope checks the fast ENVELOPE against go-imap's own extractor
// run on the whole header.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte("Received: from a by b\r\n\tfor <c@d>; Mon, 08 Jan 2024 07:04:30 +0000\r\nDate: Mon, 08 Jan 2024 07:04:30 +0000\r\nFrom: =?UTF-8?Q?Andr=C3=A9?= <a@example.org>\r\nTo: b@example.org, \"C, D\" <c@example.org>\r\nSubject: hi\r\nMessage-ID: <x@y>\r\nIn-Reply-To: <p@q> <r@s>\r\n\r\n"))
	f.Add([]byte("from: a@b\nDATE: 8 Jan 2024 07:04 GMT\nbad line\nSubject: after\n\n"))
	f.Add([]byte(" folded first\r\nSubject: x\r\n\r\n"))
	f.Add([]byte("Subject: one\r\n\r\nSubject: two\r\n"))
	f.Add([]byte("Sender: s@t\r\nReply-To: group: a@b, c@d;\r\nCc: undisclosed\r\nBcc: <e@f>\r\nSubject: a\r\n b\r\n\r\n"))
	f.Add([]byte(":empty key\r\nX\x00Bad: 1\r\nSubject: x\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := envelopeOf(raw)
		want := imapserver.ExtractEnvelope(parseHeader(raw))
		if !got.Date.Equal(want.Date) || got.Date.Location().String() != want.Date.Location().String() {
			t.Fatalf("header %q: date %v, want %v", raw, got.Date, want.Date)
		}
		got.Date = want.Date
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("header %q:\n got %+v\nwant %+v", raw, got, want)
		}
	})
}

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{
		"Mon, 08 Jan 2024 07:04:30 +0000", "8 Jan 2024 07:04:30 -0130", " Tue, 1 Feb 99 10:00:00 +0100",
		"Mon, 08 Jan 2024 07:04:30 +0000 (UTC)", "Mon, 08 Jan 2024 07:04 +0000", "Mon, 08 Jan 2024 07:04:30 GMT",
		"Xyz, 08 Jan 2024 07:04:30 +0000", "Mon, 32 Jan 2024 07:04:30 +0000", "Mon,  8 Jan 2024 07:04:30 +0000", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, gerr := parseDate(s)
		want, werr := mail.ParseDate(s)
		if s == "" {
			want, werr = got, nil // absent, not malformed
		}
		if (gerr == nil) != (werr == nil) || !got.Equal(want) || got.Location().String() != want.Location().String() {
			t.Fatalf("%q: %v %v, want %v %v", s, got, gerr, want, werr)
		}
	})
}

// benchHeader is a header as the bench harness generates them (and as
// Postfix delivers list mail): a Received chain, then the fields.
const benchHeader = "Return-Path: <farid.ivanova@lists.example.org>\r\nX-Original-To: big@bench.test\r\nDelivered-To: big@bench.test\r\n" +
	"Received: from mx3.conference.example (mx0.example.net [192.0.2.32])\r\n\tby mx.bench.test (Postfix) with ESMTPS id BFF59886\r\n\tfor <big@bench.test>; Mon, 08 Jan 2024 07:04:30 +0000\r\n" +
	"Date: Mon, 08 Jan 2024 07:04:30 +0000\r\nFrom: Farid Ivanova <farid.ivanova@lists.example.org>\r\nTo: big@bench.test\r\n" +
	"Cc: =?UTF-8?Q?J=C3=BCrgen_Peters?= <xenia.peters@cs.uni-example.edu>\r\nSubject: Meeting on printer on floor 3\r\n" +
	"Message-ID: <big-INBOX-000000.cfa18fcd@mail.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n" +
	"Content-Transfer-Encoding: 8bit\r\nX-Bench-Id: big-INBOX-000000\r\n\r\n"

// BenchmarkEnvelope compares go-imap's extractor on the whole header with
// envelopeOf, and the header read that feeds them.
func BenchmarkEnvelope(b *testing.B) {
	raw := []byte(benchHeader)
	b.Run("ExtractEnvelope", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			imapserver.ExtractEnvelope(parseHeader(raw))
		}
	})
	b.Run("envelopeOf", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			envelopeOf(raw)
		}
	})
	msg := append([]byte(benchHeader), bytes.Repeat([]byte("body text line\r\n"), 200)...)
	b.Run("readHeaderBlock", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			readHeaderBlock(bytes.NewReader(msg))
		}
	})
	b.Run("readHeaderInto", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			_, _, buf, _ = readHeaderInto(bytes.NewReader(msg), buf)
		}
	})
}

// refAddressList is imapserver's reading of an address field, on net/mail.
func refAddressList(v string) []imap.Address {
	addrs, _ := gomail.ParseAddressList(v)
	var l []imap.Address
	for _, a := range addrs {
		mailbox, host, ok := strings.Cut(a.Address, "@")
		if ok {
			l = append(l, imap.Address{Name: a.Name, Mailbox: mailbox, Host: host})
		}
	}
	return l
}

func FuzzAddressList(f *testing.F) {
	for _, s := range []string{
		"a@b", "Farid Ivanova <farid.ivanova@lists.example.org>", "big@bench.test, Xenia  Peters <x.p@cs.example.edu>",
		"J. R. Smith<j@x>", "<a@b>", "a@b,", ",a@b", "a@b, ,c@d", ".a@b", "a..b@c", "a@b.", "john.doe <j@x>",
		"a@ b", "a <b@c> <d@e>", "Smith, John <j@x>", "a@b c@d", "\ta@b\t", "Name\t<a@b>", "x.@y", "a@b>",
		"=?UTF-8?Q?J=C3=BCrgen?= <j@x>", "=?utf-8?q?a?= =?utf-8?q?b?= <x@y>", "Dr =?iso-8859-1?q?J=FCrgen?= <x@y>",
		"=?utf-8?b?SsO8cmdlbg==?= <x@y>", "=?koi8-r?q?x?= <a@b>", "=?utf-8?q?bad <a@b>", "a=?b@c", "=?utf-8?q?x?=plain <a@b>", "\"Q\" <q@x>", "g: a@b;", "a@[1.2.3.4]", "a(c)@b", "é <a@b>", "a@b\r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if v == "" {
			return
		}
		got, want := addressList(v), refAddressList(v)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %#v\nwant %#v", v, got, want)
		}
	})
}

// FuzzMsgID checks the msg-id fast path: a fuzzed value as Message-ID and
// In-Reply-To, against go-imap's extractor.
func FuzzMsgID(f *testing.F) {
	for _, s := range []string{
		"<a@b>", "<a.b@c.d> <e@f>", " <a@b> (comment)", "<a@[1.2.3.4]>", "<a@b", "a@b", "<@b>", "<a@>",
		"<a@b> junk", "<a@b><c@d>", "<a@b>, <c@d>", "<é@b>", "(c) <a@b>", "<a b@c>", "<a@b> <bad",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		raw := []byte("Message-ID: " + v + "\r\nIn-Reply-To: " + v + "\r\nSubject: " + v + "\r\n\r\n")
		got, want := envelopeOf(raw), imapserver.ExtractEnvelope(parseHeader(raw))
		if got.MessageID != want.MessageID || !reflect.DeepEqual(got.InReplyTo, want.InReplyTo) || got.Subject != want.Subject {
			t.Fatalf("%q:\n got %q %q %q\nwant %q %q %q", v, got.MessageID, got.InReplyTo, got.Subject, want.MessageID, want.InReplyTo, want.Subject)
		}
	})
}
