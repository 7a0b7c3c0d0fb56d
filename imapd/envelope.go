package imapd

import (
	"bufio"
	"bytes"
	"io"
	"mime"
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
		buf = make([]byte, 0, 4<<10)
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

// Envelope fields, as indexes into envelopeFields.
const (
	fDate = iota
	fSubject
	fFrom
	fSender
	fReplyTo
	fTo
	fCc
	fBcc
	fInReplyTo
	fMessageID
	nEnvelopeFields
)

// envelopeFields are the fields ENVELOPE shows, lower case, canonical.
var envelopeFields = [nEnvelopeFields][2]string{
	{"date", "Date"}, {"subject", "Subject"}, {"from", "From"}, {"sender", "Sender"},
	{"reply-to", "Reply-To"}, {"to", "To"}, {"cc", "Cc"}, {"bcc", "Bcc"},
	{"in-reply-to", "In-Reply-To"}, {"message-id", "Message-Id"},
}

func envelopeField(name []byte) int {
	if len(name) < 2 || len(name) > len("in-reply-to") {
		return -1
	}
	for i, f := range envelopeFields {
		if len(f[0]) == len(name) && asciiEqualFold(name, f[0]) {
			return i
		}
	}
	return -1
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

// envelopeValues returns the values of the first occurrence of each
// ENVELOPE field in raw, as textproto.ReadHeader reads them (continuation
// lines joined by a space, blanks trimmed) from the whole block: it stops
// where textproto stops at a malformed line, so the same fields count.
func envelopeValues(raw []byte) (vals [nEnvelopeFields]string, found [nEnvelopeFields]bool) {
	if len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t') {
		return vals, found // textproto refuses a folded first line
	}
	for len(raw) > 0 {
		if raw[0] == '\n' || bytes.HasPrefix(raw, []byte("\r\n")) {
			break // the blank line
		}
		// One field: its first line and the continuation lines after it.
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
		colon := bytes.IndexByte(field, ':')
		if colon < 0 {
			break
		}
		name := trimBlanks(field[:colon])
		if !validFieldName(name) {
			break
		}
		if k := envelopeField(name); k >= 0 && !found[k] {
			found[k] = true
			vals[k] = unfold(field[colon+1:])
		}
	}
	return vals, found
}

// unfold joins the lines of a field value as textproto does: each line
// without its line ending and surrounding blanks, empty ones dropped,
// joined by one space.
func unfold(v []byte) string {
	if i := bytes.IndexByte(v, '\n'); i < 0 || i == len(v)-1 {
		// One line, the common case: no builder needed.
		return string(trimBlanks(lineContent(v)))
	}
	var b strings.Builder
	b.Grow(len(v))
	for len(v) > 0 {
		i := bytes.IndexByte(v, '\n')
		line := v
		if i >= 0 {
			line = v[:i+1]
		}
		v = v[len(line):]
		if l := trimBlanks(lineContent(line)); len(l) > 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.Write(l)
		}
	}
	return b.String()
}

// lineContent drops a line's ending ("\n" or "\r\n") as bufio.ReadLine
// does.
func lineContent(l []byte) []byte {
	if n := len(l); n > 0 && l[n-1] == '\n' {
		l = l[:n-1]
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
	}
	return l
}

func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
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
	vals, found := envelopeValues(raw)
	env := &imap.Envelope{
		From:    addressList(vals[fFrom]),
		Sender:  addressList(vals[fSender]),
		ReplyTo: addressList(vals[fReplyTo]),
		To:      addressList(vals[fTo]),
		Cc:      addressList(vals[fCc]),
		Bcc:     addressList(vals[fBcc]),
	}
	env.Date, _ = parseDate(vals[fDate])
	var ok [3]bool
	env.Subject, ok[0] = vals[fSubject], !strings.Contains(vals[fSubject], "=?")
	env.MessageID, ok[1] = plainMsgID(vals[fMessageID])
	env.InReplyTo, ok[2] = plainMsgIDList(vals[fInReplyTo])
	if ok == [3]bool{true, true, true} {
		return env
	}
	// Encoded words, comments, domain literals: go-message's decoders.
	var th textproto.Header
	for _, k := range []int{fSubject, fInReplyTo, fMessageID} {
		if found[k] {
			th.Add(envelopeFields[k][1], vals[k])
		}
	}
	mh := gomail.Header{Header: gomessage.Header{Header: th}}
	env.Subject, _ = mh.Subject()
	env.InReplyTo, _ = mh.MsgIDList("In-Reply-To")
	env.MessageID, _ = mh.MessageID()
	return env
}

// plainMsgID reads a msg-id ("<left@right>", RFC 5322 3.6.4) as
// go-message does, when it holds no comment, domain literal or non-ASCII
// octet; ok is false otherwise. An empty or malformed one reads as "", as
// there. What follows the closing '>' is ignored, as there.
func plainMsgID(v string) (id string, ok bool) {
	if v == "" {
		return "", true
	}
	id, _, ok, err := nextMsgID(v)
	if err {
		return "", ok
	}
	return id, ok
}

// plainMsgIDList reads a list of msg-ids as go-message does (keeping
// those before a malformed one), under plainMsgID's conditions.
func plainMsgIDList(v string) (l []string, ok bool) {
	for v != "" {
		id, rest, ok, err := nextMsgID(v)
		if !ok {
			return nil, false
		}
		if err {
			return l, true
		}
		l = append(l, id)
		v = rest
	}
	return l, true
}

// nextMsgID reads the msg-id at the start of v and the blanks after it;
// ok is false if go-message's own reading is needed, err true if v does
// not start with a msg-id.
func nextMsgID(v string) (id, rest string, ok, err bool) {
	v = strings.TrimLeft(v, " \t")
	if strings.HasPrefix(v, "(") {
		return "", "", false, false
	}
	if !strings.HasPrefix(v, "<") {
		return "", "", true, true
	}
	v = v[1:]
	left := msgIDAtomLen(v)
	if left < 0 {
		return "", "", false, false
	}
	if left == 0 || left == len(v) || v[left] != '@' {
		return "", "", true, true
	}
	r := v[left+1:]
	if strings.HasPrefix(r, "[") {
		return "", "", false, false
	}
	right := msgIDAtomLen(r)
	if right < 0 {
		return "", "", false, false
	}
	if right == 0 || right == len(r) || r[right] != '>' {
		return "", "", true, true
	}
	rest = strings.TrimLeft(r[right+1:], " \t")
	if strings.HasPrefix(rest, "(") {
		return "", "", false, false
	}
	return v[:left+1+right], rest, true, false
}

// msgIDAtomLen returns the length of the run of ASCII atext and dots at
// the start of s, or -1 if the run ends at a non-ASCII octet.
func msgIDAtomLen(s string) int {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x80:
			return -1
		case c == '.' || isAtext(c):
		default:
			return i
		}
	}
	return len(s)
}

// addressList is imapserver's reading of an address field: addresses
// without a domain are left out.
func addressList(v string) []imap.Address {
	if v == "" {
		return nil
	}
	if l, ok := plainAddressList(v); ok {
		return l
	}
	addrs, _ := gomail.ParseAddressList(v)
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

// plainAddressList reads the forms nearly every address field has —
// "local@domain" and "Display Name <local@domain>", comma-separated, in
// ASCII atoms, the name possibly in UTF-8 or ISO-8859-1 encoded words — as
// net/mail does; ok is false for anything else (quotes, comments, groups,
// other charsets, domain literals, odd spacing), which net/mail then reads.
func plainAddressList(v string) (l []imap.Address, ok bool) {
	if strings.ContainsAny(v, "\"()\\:;[]") {
		return nil, false
	}
	l = make([]imap.Address, 0, strings.Count(v, ",")+1)
	for len(v) > 0 {
		elem := v
		if i := strings.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
			if v == "" {
				return nil, false
			}
		} else {
			v = ""
		}
		elem = strings.Trim(elem, " \t")
		var a imap.Address
		spec := elem
		if i := strings.IndexByte(elem, '<'); i >= 0 {
			if !strings.HasSuffix(elem, ">") {
				return nil, false
			}
			spec = elem[i+1 : len(elem)-1]
			if a.Name, ok = plainPhrase(elem[:i]); !ok {
				return nil, false
			}
		}
		local, domain, found := strings.Cut(spec, "@")
		if !found || !dotAtom(local) || !dotAtom(domain) {
			return nil, false
		}
		a.Mailbox, a.Host = local, domain
		l = append(l, a)
	}
	return l, len(l) > 0
}

// plainPhrase returns a display name of atoms (dots allowed) separated by
// blanks as net/mail reads it: the words joined by one space, encoded
// words decoded, adjacent encoded words joined without one.
func plainPhrase(p string) (string, bool) {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c != ' ' && c != '\t' && c != '.' && !isAtext(c) {
			return "", false
		}
	}
	p = strings.Trim(p, " \t")
	if !strings.Contains(p, "=?") {
		if !strings.Contains(p, "  ") && !strings.ContainsRune(p, '\t') {
			return p, true // one space between words already
		}
		return strings.Join(strings.FieldsFunc(p, isBlank), " "), true
	}
	var b strings.Builder
	prevEncoded := false
	for _, w := range strings.FieldsFunc(p, isBlank) {
		encoded := strings.HasPrefix(w, "=?")
		if encoded {
			d, ok := decodeWord(w)
			if !ok {
				return "", false
			}
			w = d
		}
		if b.Len() > 0 && !(prevEncoded && encoded) {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		prevEncoded = encoded
	}
	return b.String(), true
}

func isBlank(r rune) bool { return r == ' ' || r == '\t' }

// decodeWord decodes one RFC 2047 encoded word in a charset the mime
// package decodes itself; ok is false for anything else.
func decodeWord(w string) (string, bool) {
	cs, _, found := strings.Cut(strings.TrimPrefix(w, "=?"), "?")
	if !found || !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") && !strings.EqualFold(cs, "iso-8859-1") {
		return "", false
	}
	var dec mime.WordDecoder
	d, err := dec.Decode(w)
	return d, err == nil
}

// dotAtom reports whether s is an RFC 5322 dot-atom of ASCII atext.
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// isAtext reports whether c is ASCII atext (RFC 5322 3.2.3).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
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
