package imapd

import (
	"bufio"
	"bytes"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// This file is the ENVELOPE path of a FETCH that misses the cache: read a
// message's header block into a reused buffer, and build its ENVELOPE
// (RFC 3501 7.4.2) from the few fields it names. The result is the one
// imapserver.ExtractEnvelope gives for the whole header (FuzzEnvelope
// checks that); it costs a fraction, as a campus mailbox's header is
// mostly Received, DKIM and list fields that ENVELOPE never shows.

// readHeaderInto reads the header block of a message from r, up to and
// including the blank line that ends it, into buf (grown as needed and
// returned for reuse). hdr holds at most maxHeaderBytes of it; n is the
// octet length of the whole block, the offset of the body.
func readHeaderInto(r io.Reader, buf []byte) (hdr []byte, n int64, _ []byte, err error) {
	buf = buf[:0]
	if cap(buf) == 0 {
		buf = make([]byte, 0, 8<<10)
	}
	scan := 0 // where to resume the search for the blank line
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxHeaderBytes {
				// Keep what ENVELOPE can use; count the rest.
				k, err := countHeaderRest(r, buf[len(buf)-2], buf[len(buf)-1])
				return buf, int64(len(buf)) + k, buf, err
			}
			grown := make([]byte, len(buf), min(2*cap(buf), maxHeaderBytes))
			copy(grown, buf)
			buf = grown
		}
		k, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if end := headerEnd(buf, scan); end >= 0 {
			return buf[:end], int64(end), buf, nil
		}
		scan = max(0, len(buf)-2)
		if rerr == io.EOF {
			return buf, int64(len(buf)), buf, nil
		}
		if rerr != nil {
			return nil, 0, buf, rerr
		}
	}
}

// headerEnd returns the length of the header block in b (through the
// blank line), or -1 if b does not hold all of it. A blank line is "\n"
// or "\r\n" at the start of a line; the search starts at from, which is
// 0 or a position before any line feed not yet looked past.
func headerEnd(b []byte, from int) int {
	if from == 0 {
		switch {
		case bytes.HasPrefix(b, []byte("\n")):
			return 1
		case bytes.HasPrefix(b, []byte("\r\n")):
			return 2
		}
	}
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch rest := b[i:]; {
		case bytes.HasPrefix(rest, []byte("\n")):
			return i + 1
		case bytes.HasPrefix(rest, []byte("\r\n")):
			return i + 2
		}
	}
}

// countHeaderRest reads r up to the end of the header block and returns
// how many octets it read; x and y are the two octets before r's first.
func countHeaderRest(r io.Reader, x, y byte) (int64, error) {
	br := bufio.NewReaderSize(r, 4<<10)
	var n int64
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		if c == '\n' && (y == '\n' || y == '\r' && x == '\n') {
			return n, nil
		}
		x, y = y, c
	}
}

// envelopeFields are the fields ENVELOPE shows, lower case.
var envelopeFields = [...]string{"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id"}

func isEnvelopeField(name []byte) bool {
	if len(name) < 2 || len(name) > len("in-reply-to") {
		return false
	}
	for _, f := range envelopeFields {
		if len(f) == len(name) && asciiEqualFold(name, f) {
			return true
		}
	}
	return false
}

func asciiEqualFold(b []byte, lower string) bool {
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// envelopeHeader returns the ENVELOPE fields of raw, as textproto would
// read them from the whole block: it stops where textproto stops at a
// malformed line, so the same fields are kept.
func envelopeHeader(raw []byte) textproto.Header {
	var keep []byte
	if len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t') {
		return textproto.Header{} // textproto refuses a folded first line
	}
	for len(raw) > 0 {
		// One field: its first line and the continuation lines after it.
		if raw[0] == '\n' || bytes.HasPrefix(raw, []byte("\r\n")) {
			break // the blank line
		}
		end := 0
		for {
			i := bytes.IndexByte(raw[end:], '\n')
			if i < 0 {
				end = len(raw)
				break
			}
			end += i + 1
			if end >= len(raw) || raw[end] != ' ' && raw[end] != '\t' {
				break
			}
		}
		field := raw[:end]
		raw = raw[end:]
		line := bytes.TrimSuffix(bytes.TrimSuffix(field, []byte("\n")), []byte("\r"))
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			break
		}
		name := bytes.Trim(line[:colon], " \t")
		if !validFieldName(name) {
			break
		}
		if isEnvelopeField(name) {
			keep = append(keep, field...)
			if field[len(field)-1] != '\n' {
				keep = append(keep, '\r', '\n')
			}
		}
	}
	keep = append(keep, '\r', '\n')
	h, _ := textproto.ReadHeader(bufio.NewReaderSize(bytes.NewReader(keep), 512))
	return h
}

func validFieldName(name []byte) bool {
	for _, c := range name {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// envelopeOf returns the ENVELOPE of a message header (RFC 3501 7.4.2).
func envelopeOf(raw []byte) *imap.Envelope {
	mh := gomail.Header{Header: gomessage.Header{Header: envelopeHeader(raw)}}
	date, _ := parseDate(mh.Get("Date"))
	subject, _ := mh.Subject()
	inReplyTo, _ := mh.MsgIDList("In-Reply-To")
	messageID, _ := mh.MessageID()
	return &imap.Envelope{
		Date:      date,
		Subject:   subject,
		From:      addressList(mh, "From"),
		Sender:    addressList(mh, "Sender"),
		ReplyTo:   addressList(mh, "Reply-To"),
		To:        addressList(mh, "To"),
		Cc:        addressList(mh, "Cc"),
		Bcc:       addressList(mh, "Bcc"),
		InReplyTo: inReplyTo,
		MessageID: messageID,
	}
}

// addressList is imapserver's reading of an address field: addresses
// without a domain are left out.
func addressList(mh gomail.Header, k string) []imap.Address {
	addrs, _ := mh.AddressList(k)
	var l []imap.Address
	for _, a := range addrs {
		mailbox, host, ok := strings.Cut(a.Address, "@")
		if !ok {
			continue
		}
		l = append(l, imap.Address{Name: a.Name, Mailbox: mailbox, Host: host})
	}
	return l
}

// Date layouts RFC 5322 3.3 recommends, with and without the day of the
// week, in the order net/mail tries them among its others.
const (
	dateWithDay    = "Mon, 2 Jan 2006 15:04:05 -0700"
	dateWithoutDay = "2 Jan 2006 15:04:05 -0700"
)

// parseDate is net/mail.ParseDate with a fast path for the form nearly
// every message has ("Mon, 2 Jan 2006 15:04:05 -0700", nothing after the
// zone): net/mail tries 24 layouts that fail first, allocating an error
// each time. The fast path gives the layout net/mail's first match would.
func parseDate(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	s := strings.TrimLeft(v, " \t")
	if z := strings.IndexAny(s, "+-"); z >= 0 && z == len(s)-5 && !strings.ContainsAny(s, "\r\n()") {
		layout := dateWithoutDay
		if s[0] < '0' || s[0] > '9' {
			layout = dateWithDay
		}
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return mail.ParseDate(v)
}
