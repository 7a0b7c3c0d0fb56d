package imapd

import (
	"bytes"
	"mime"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/backend"
)

// This file writes the FETCH responses that carry only data Roost keeps in
// memory — UID, FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE — straight
// into the connection, octet for octet as go-imap's FetchResponseWriter
// would (fetchwire_test.go and FuzzWireEnvelope compare the two). Going
// through go-imap costs, for every message, two write deadlines, two
// locks, an encoder and a buffer flush: most of the time a client's
// "UID FETCH 1:* (FLAGS)" of a 100,000-message mailbox takes. Here the
// responses are gathered into one buffer and written 64 KiB at a time.

// wireTimeout bounds each write of gathered responses, as go-imap bounds
// each response it writes.
const wireTimeout = 30 * time.Second

// wireFetch says whether a FETCH asks for nothing but items wireWriter
// writes.
func wireFetch(opts *imap.FetchOptions) bool {
	return opts.BodyStructure == nil && len(opts.BodySection) == 0 &&
		len(opts.BinarySection) == 0 && len(opts.BinarySectionSize) == 0
}

// wireWriter gathers FETCH responses for the connection conn.
type wireWriter struct {
	// conn is the connection go-imap writes to: TLS, if the session
	// uses it, over the countConn that batches the writes.
	conn net.Conn
	// utf8 allows UTF-8 in quoted strings (IMAP4rev2 or UTF8=ACCEPT
	// enabled), as go-imap's encoder does.
	utf8 bool
	buf  []byte
	err  error // of the first failed write; later writes are dropped
}

func newWireWriter(conn net.Conn, caps imap.CapSet) *wireWriter {
	return &wireWriter{conn: conn, utf8: caps.Has(imap.CapIMAP4rev2) || caps.Has(imap.CapUTF8Accept)}
}

// flush writes what was gathered (nothing for a nil w). It must run before anything else
// writes to the connection (go-imap's responses), so that the responses
// keep their order.
func (w *wireWriter) flush() error {
	if w == nil {
		return nil
	}
	if len(w.buf) == 0 || w.err != nil {
		w.buf = w.buf[:0]
		return w.err
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(wireTimeout)); err != nil {
		w.err = err
		return err
	}
	_, err := w.conn.Write(w.buf)
	if derr := w.conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	w.buf = w.buf[:0]
	w.err = err
	return err
}

// message starts the response for sequence number seq; end finishes it.
// Items are appended to w.buf between them with item.
func (w *wireWriter) message(seq uint32) {
	if w.buf == nil {
		w.buf = make([]byte, 0, 2*batchSize)
	}
	w.buf = append(w.buf, "* "...)
	w.buf = strconv.AppendUint(w.buf, uint64(seq), 10)
	w.buf = append(w.buf, " FETCH ("...)
}

// item starts a data item named name: a space before every item but the
// first of the response.
func (w *wireWriter) item(first bool, name string) {
	if !first {
		w.buf = append(w.buf, ' ')
	}
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, ' ')
}

// end finishes a response, and writes the gathered ones once they fill a
// batch.
func (w *wireWriter) end() error {
	w.buf = append(w.buf, ")\r\n"...)
	if len(w.buf) >= batchSize {
		return w.flush()
	}
	return w.err
}

// flagsValid says whether go-imap's encoder accepts every flag of l
// (flag-keyword or flag-extension, RFC 3501 9); a message with one it
// refuses goes through go-imap, to fail as it fails there.
func flagsValid(l []imap.Flag) bool {
	for _, f := range l {
		if f == `\*` {
			continue
		}
		if len(f) == 0 {
			return false
		}
		for i := 0; i < len(f); i++ {
			c := f[i]
			if c == '\\' && i == 0 {
				continue
			}
			if !isAtomChar(c) {
				return false
			}
		}
	}
	return true
}

// isAtomChar is imapwire.IsAtomChar: not a list, quote or literal
// special, and not a control character (C0, DEL or C1, taking the octet
// as a code point).
func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c >= 0x20 && (c < 0x7f || c > 0x9f)
}

func (w *wireWriter) flags(l []imap.Flag) {
	w.buf = append(w.buf, '(')
	for i, f := range l {
		if i > 0 {
			w.buf = append(w.buf, ' ')
		}
		w.buf = append(w.buf, f...)
	}
	w.buf = append(w.buf, ')')
}

// internalDateLayout is go-imap's date-time layout (RFC 3501 date-time).
const internalDateLayout = "_2-Jan-2006 15:04:05 -0700"

// envelopeDateLayout is the layout go-imap writes an ENVELOPE's date in.
const envelopeDateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// date appends t in layout as a quoted string: the layouts give ASCII
// letters, digits, blanks and signs only, which go-imap quotes as they
// are.
func (w *wireWriter) date(t time.Time, layout string) {
	w.buf = append(w.buf, '"')
	w.buf = t.AppendFormat(w.buf, layout)
	w.buf = append(w.buf, '"')
}

// str appends s as go-imap's Encoder.String does: quoted if it can be,
// else as a literal.
func (w *wireWriter) str(s string) {
	if !w.quotable(s) {
		w.buf = append(w.buf, '{')
		w.buf = strconv.AppendInt(w.buf, int64(len(s)), 10)
		w.buf = append(w.buf, "}\r\n"...)
		w.buf = append(w.buf, s...)
		return
	}
	w.buf = append(w.buf, '"')
	w.escaped(s)
	w.buf = append(w.buf, '"')
}

// escaped appends s with '"' and '\\' escaped, as in a quoted string.
func (w *wireWriter) escaped(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			w.buf = append(w.buf, '\\')
		}
		w.buf = append(w.buf, s[i])
	}
}

// quotable is imapwire's validQuoted.
func (w *wireWriter) quotable(s string) bool {
	if len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0 || c == '\r' || c == '\n':
			return false
		case c >= 0x80 && !w.utf8:
			return false
		}
	}
	return true
}

// nstring appends s, or NIL if it is empty.
func (w *wireWriter) nstring(s string) {
	if s == "" {
		w.buf = append(w.buf, "NIL"...)
		return
	}
	w.str(s)
}

// envelope appends env as go-imap's writeEnvelope does (RFC 3501 7.4.2).
func (w *wireWriter) envelope(env *imap.Envelope) {
	if env == nil {
		env = new(imap.Envelope)
	}
	sender, replyTo := env.Sender, env.ReplyTo
	if sender == nil {
		sender = env.From
	}
	if replyTo == nil {
		replyTo = env.From
	}
	w.buf = append(w.buf, '(')
	if env.Date.IsZero() {
		w.buf = append(w.buf, "NIL"...)
	} else {
		w.date(env.Date, envelopeDateLayout)
	}
	w.buf = append(w.buf, ' ')
	w.nstring(mime.QEncoding.Encode("utf-8", env.Subject))
	for _, l := range [...][]imap.Address{env.From, sender, replyTo, env.To, env.Cc, env.Bcc} {
		w.buf = append(w.buf, ' ')
		w.addresses(l)
	}
	w.buf = append(w.buf, ' ')
	if len(env.InReplyTo) > 0 {
		w.msgIDs(env.InReplyTo)
	} else {
		w.buf = append(w.buf, "NIL"...)
	}
	w.buf = append(w.buf, ' ')
	if env.MessageID != "" {
		w.msgIDs([]string{env.MessageID})
	} else {
		w.buf = append(w.buf, "NIL"...)
	}
	w.buf = append(w.buf, ')')
}

// wireEnvelope returns env as wireWriter.envelope writes it without
// UTF8=ACCEPT, for the cache, and whether it is the same with UTF8=ACCEPT:
// it is unless some string has a non-ASCII octet, which only a literal
// carries without UTF8=ACCEPT.
// scratch is a buffer to encode in, returned grown for reuse.
func wireEnvelope(env *imap.Envelope, scratch []byte) (wire []byte, utf8Same bool, _ []byte) {
	w := wireWriter{buf: scratch[:0]}
	w.envelope(env)
	wire = bytes.Clone(w.buf) // of the exact size: the cache keeps it
	return wire, !slices.ContainsFunc(wire, func(c byte) bool { return c >= 0x80 }), w.buf
}

func (w *wireWriter) addresses(l []imap.Address) {
	if len(l) == 0 {
		w.buf = append(w.buf, "NIL"...)
		return
	}
	w.buf = append(w.buf, '(')
	for i := range l {
		a := &l[i]
		if i > 0 {
			w.buf = append(w.buf, ' ')
		}
		w.buf = append(w.buf, '(')
		w.nstring(mime.QEncoding.Encode("utf-8", a.Name))
		w.buf = append(w.buf, " NIL "...)
		w.nstring(a.Mailbox)
		w.buf = append(w.buf, ' ')
		w.nstring(a.Host)
		w.buf = append(w.buf, ')')
	}
	w.buf = append(w.buf, ')')
}

// msgIDs appends "<id1> <id2> …" as one string, as go-imap writes
// In-Reply-To and Message-ID.
func (w *wireWriter) msgIDs(ids []string) {
	n := 2*len(ids) + len(ids) - 1
	for _, id := range ids {
		n += len(id)
	}
	quoted := n <= 4096
	for _, id := range ids {
		quoted = quoted && w.quotable(id)
	}
	if !quoted {
		w.buf = append(w.buf, '{')
		w.buf = strconv.AppendInt(w.buf, int64(n), 10)
		w.buf = append(w.buf, "}\r\n"...)
		for i, id := range ids {
			if i > 0 {
				w.buf = append(w.buf, ' ')
			}
			w.buf = append(w.buf, '<')
			w.buf = append(w.buf, id...)
			w.buf = append(w.buf, '>')
		}
		return
	}
	w.buf = append(w.buf, '"')
	for i, id := range ids {
		if i > 0 {
			w.buf = append(w.buf, ' ')
		}
		w.buf = append(w.buf, '<')
		w.escaped(id)
		w.buf = append(w.buf, '>')
	}
	w.buf = append(w.buf, '"')
}

// wireOne is fetchOne's writing of a wireFetch response, item for item
// as go-imap's.
func (s *session) wireOne(ww *wireWriter, seq uint32, m *backend.Message, opts *imap.FetchOptions, wantFlags bool, flags []imap.Flag, size int64, info *msgInfo) error {
	ww.message(seq)
	first := true
	if opts.UID {
		ww.item(first, "UID")
		ww.buf = strconv.AppendUint(ww.buf, uint64(m.UID), 10)
		first = false
	}
	if wantFlags {
		ww.item(first, "FLAGS")
		ww.flags(flags)
		first = false
	}
	if opts.InternalDate {
		ww.item(first, "INTERNALDATE")
		ww.date(m.InternalDate, internalDateLayout)
		first = false
	}
	if opts.RFC822Size {
		ww.item(first, "RFC822.SIZE")
		ww.buf = strconv.AppendInt(ww.buf, size, 10)
		first = false
	}
	if opts.Envelope {
		ww.item(first, "ENVELOPE")
		if info.wire != nil && (!ww.utf8 || info.wireUTF8) {
			ww.buf = append(ww.buf, info.wire...)
		} else {
			ww.envelope(info.env)
		}
	}
	return ww.end()
}
