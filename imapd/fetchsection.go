package imapd

// The body sections of FETCH (BODY[…], BINARY[…]): where each one's
// octets come from, and their streaming from the message file.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/backend"
)

// sectionPlan says where a section's octets come from: buf, or the range
// [off, off+raw) of the message file, decoded by its transfer encoding if
// decode is set, of which skip octets are dropped and size are sent.
type sectionPlan struct {
	buf    []byte
	off    int64
	raw    int64
	decode string
	skip   int64
	size   int64
	r      io.ReadCloser // opened by openPlan, positioned at skip
}

// openPlan opens the file range p streams from, if it streams any.
func (s *session) openPlan(m *backend.Message, p *sectionPlan) error {
	if p.buf != nil || p.size == 0 {
		return nil
	}
	r, err := s.openRange(m, *p)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, r, p.skip); err != nil {
		r.Close()
		return fmt.Errorf("message %d is shorter than its index says: %w", m.UID, err)
	}
	p.r = r
	return nil
}

func (p *sectionPlan) close() {
	if p.r != nil {
		p.r.Close()
		p.r = nil
	}
}

func rangePlan(off, end int64) sectionPlan {
	if end < off {
		end = off
	}
	return sectionPlan{off: off, raw: end - off, size: end - off}
}

func (p *sectionPlan) applyPartial(partial *imap.SectionPartial) {
	if partial == nil {
		return
	}
	start := min(partial.Offset, p.size)
	n := min(partial.Size, p.size-start)
	if p.buf != nil {
		p.buf = p.buf[start : start+n]
	} else {
		p.skip += start
	}
	p.size = n
}

// planBody plans BODY[section]. size is the message's size, or -1 if
// fetchNeedsSize says the section does not need it.
func (s *session) planBody(m *backend.Message, size int64, info *msgInfo, sec *imap.FetchItemBodySection) (sectionPlan, error) {
	var p sectionPlan
	var hdrLen int64
	if info != nil { // nil for BODY[], which needs no structure
		hdrLen = info.hdrLen
		if size >= 0 {
			hdrLen = min(hdrLen, size)
		}
	}
	var hdrOff, hdrEnd int64 = -1, -1 // header range to filter
	switch {
	case len(sec.Part) == 0:
		switch sec.Specifier {
		case imap.PartSpecifierNone:
			p = rangePlan(0, size)
		case imap.PartSpecifierHeader:
			p, hdrOff, hdrEnd = rangePlan(0, hdrLen), 0, hdrLen
		case imap.PartSpecifierText:
			p = rangePlan(hdrLen, size)
		default:
			p = sectionPlan{buf: []byte{}}
		}
	default:
		pt := findPart(info.tree, sec.Part)
		switch {
		case pt == nil:
			p = sectionPlan{buf: []byte{}}
		case sec.Specifier == imap.PartSpecifierNone:
			p = rangePlan(pt.bodyOff, pt.end)
		case sec.Specifier == imap.PartSpecifierMIME:
			p = rangePlan(pt.hdrOff, pt.bodyOff)
		case pt.msg == nil: // HEADER and TEXT apply to message/rfc822 parts only
			p = sectionPlan{buf: []byte{}}
		case sec.Specifier == imap.PartSpecifierHeader:
			p, hdrOff, hdrEnd = rangePlan(pt.msg.hdrOff, pt.msg.bodyOff), pt.msg.hdrOff, pt.msg.bodyOff
		default:
			p = rangePlan(pt.msg.bodyOff, pt.msg.end)
		}
	}
	if hdrOff >= 0 && (len(sec.HeaderFields) > 0 || len(sec.HeaderFieldsNot) > 0) {
		raw, err := s.readRange(m, hdrOff, min(hdrEnd-hdrOff, maxHeaderBytes))
		if err != nil {
			return p, err
		}
		if len(sec.HeaderFields) > 0 {
			p = sectionPlan{buf: filterHeader(raw, sec.HeaderFields, false)}
		} else {
			p = sectionPlan{buf: filterHeader(raw, sec.HeaderFieldsNot, true)}
		}
		p.size = int64(len(p.buf))
	}
	p.applyPartial(sec.Partial)
	return p, nil
}

// planBinary plans BINARY[part] (RFC 3516): the part's content with its
// Content-Transfer-Encoding removed. The decoded size is found by decoding
// once, so that the literal can be streamed the second time. size is as
// for planBody.
func (s *session) planBinary(m *backend.Message, size int64, info *msgInfo, path []int, partial *imap.SectionPartial) (sectionPlan, error) {
	if len(path) == 0 {
		p := rangePlan(0, size)
		p.applyPartial(partial)
		return p, nil
	}
	pt := findPart(info.tree, path)
	if pt == nil {
		return sectionPlan{buf: []byte{}}, nil
	}
	p := rangePlan(pt.bodyOff, pt.end)
	if len(pt.children) == 0 && pt.msg == nil {
		switch pt.encoding {
		case "", "7bit", "8bit", "binary":
		case "base64", "quoted-printable":
			p.decode = pt.encoding
			n, err := s.decodedSize(m, p)
			if err != nil {
				return p, err
			}
			p.size = n
		default:
			return p, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE,
				Text: "Unknown Content-Transfer-Encoding " + strings.ToUpper(pt.encoding)}
		}
	}
	p.applyPartial(partial)
	return p, nil
}

func (s *session) decodedSize(m *backend.Message, p sectionPlan) (int64, error) {
	r, err := s.openRange(m, p)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return io.Copy(io.Discard, r)
}

// readRange reads n octets at off of message m.
func (s *session) readRange(m *backend.Message, off, n int64) ([]byte, error) {
	r, err := s.openRange(m, rangePlan(off, off+n))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openRange opens the section p names: its raw range, decoded if needed,
// before skip is applied.
func (s *session) openRange(m *backend.Message, p sectionPlan) (io.ReadCloser, error) {
	rc, err := s.sel.st.mbox.OpenMessage(s.ctx, m.UID)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, p.off); err != nil {
		rc.Close()
		return nil, fmt.Errorf("message %d is shorter than its index says: %w", m.UID, err)
	}
	var r io.Reader = io.LimitReader(rc, p.raw)
	switch p.decode {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &base64Cleaner{r: r})
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	return readCloser{r, rc}, nil
}

// emit writes exactly p.size octets of the section to w. The literal's
// size is on the wire already, so if the file delivers fewer octets (it
// was cut in place, which Maildir writers never do) no answer can be
// right: the connection is closed, as Dovecot does, rather than sending
// padding as if it were the message.
func (s *session) emit(w io.Writer, m *backend.Message, p *sectionPlan, scratch *fetchScratch) error {
	if p.buf != nil {
		_, err := w.Write(p.buf)
		return err
	}
	if p.size == 0 {
		return nil
	}
	if scratch.copy == nil {
		scratch.copy = make([]byte, 64<<10)
	}
	er := &errReader{r: p.r}
	n, err := io.CopyBuffer(w, io.LimitReader(er, p.size), scratch.copy)
	if n < p.size && er.err != nil {
		s.log.Error("message file shorter than its recorded size; closing the connection", "uid", m.UID, "want", p.size, "got", n, "err", er.err)
		s.cc.Close()
		return fmt.Errorf("message %d: file shorter than its recorded size: %w", m.UID, errTruncated)
	}
	return err
}

// errReader remembers the error its reader returned, to tell a file that
// ended early from a client that went away.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil {
		e.err = err
	}
	return n, err
}

// errTruncated: a message file ended before its recorded size.
var errTruncated = errors.New("message file truncated")

// base64Cleaner drops the line breaks and other bytes outside the base64
// alphabet that MIME allows between base64 characters (RFC 2045 6.8).
type base64Cleaner struct{ r io.Reader }

func (c *base64Cleaner) Read(b []byte) (int, error) {
	for {
		n, err := c.r.Read(b)
		j := 0
		for _, ch := range b[:n] {
			if 'A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '+' || ch == '/' || ch == '=' {
				b[j] = ch
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
