package imapd

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Limits that keep a hostile message from costing unbounded memory or time.
const (
	maxHeaderBytes = 256 << 10 // header bytes kept per part; the rest is still counted
	maxMIMEDepth   = 32        // deeper nesting is treated as opaque content
	maxMIMEParts   = 5000      // more parts are treated as opaque content
)

// part is one MIME entity of a message, located by octet offsets in the CRLF
// form the store serves. The header is [hdrOff, bodyOff), including the blank
// line; the body is [bodyOff, end). Offsets make every BODY[...] section a
// byte range of the file, so sections stream without buffering (RFC 3501
// 6.4.5) and sizes are exact.
type part struct {
	hdrOff, bodyOff, end int64
	lines                int64 // body lines, as BODYSTRUCTURE reports them
	mediaType            string
	params               map[string]string
	encoding             string
	header               textproto.Header // parsed fields (first maxHeaderBytes)
	children             []*part          // multipart children
	msg                  *part            // message/rfc822 body: the enclosed message
}

// mimeParser reads a CRLF message line by line, keeping the offset of every
// line so parts can be located exactly.
type mimeParser struct {
	br      *bufio.Reader
	off     int64  // offset of the next unread byte
	line    []byte // peeked line (including its line ending), valid until consume
	peeked  bool
	eof     bool
	long    bool // the peeked line is a fragment of a longer line
	readErr error
	bounds  []string
	nparts  int
	lfs     int64 // line feeds consumed so far
	lastLen int   // length of the last consumed line
	lastLF  bool  // the last consumed line ended with a line feed
}

// parseMessage returns the part tree of a whole message read from r.
func parseMessage(r io.Reader) (*part, error) {
	p := &mimeParser{br: bufio.NewReaderSize(r, 32<<10)}
	root := p.parsePart(false, 0)
	if p.readErr != nil {
		return nil, p.readErr
	}
	return root, nil
}

// peek returns the next line without consuming it; ok is false at EOF.
func (p *mimeParser) peek() (line []byte, ok bool) {
	if p.peeked {
		return p.line, !p.eof
	}
	p.peeked = true
	b, err := p.br.ReadSlice('\n')
	p.long = err == bufio.ErrBufferFull
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		p.readErr = err
		b = nil
	}
	if len(b) == 0 {
		p.eof = true
		p.line = nil
		return nil, false
	}
	p.line = b
	return b, true
}

func (p *mimeParser) consume() {
	p.off += int64(len(p.line))
	if p.line[len(p.line)-1] == '\n' {
		p.lfs++
	}
	p.lastLen = len(p.line)
	p.lastLF = p.line[len(p.line)-1] == '\n'
	p.peeked = false
}

// boundary reports whether line is a delimiter of an enclosing multipart:
// idx is its index in p.bounds (-1 if none) and final marks a close
// delimiter.
func (p *mimeParser) boundary(line []byte) (idx int, final bool) {
	if p.long || len(p.bounds) == 0 || !bytes.HasPrefix(line, []byte("--")) {
		return -1, false
	}
	l := bytes.TrimRight(line[2:], " \t\r\n")
	for i := len(p.bounds) - 1; i >= 0; i-- {
		b := p.bounds[i]
		if !bytes.HasPrefix(l, []byte(b)) {
			continue
		}
		switch rest := l[len(b):]; {
		case len(rest) == 0:
			return i, false
		case string(rest) == "--":
			return i, true
		}
	}
	return -1, false
}

// atDelimiter reports whether parsing stopped at a delimiter line.
func (p *mimeParser) atDelimiter() bool {
	if !p.peeked || p.eof {
		return false
	}
	idx, _ := p.boundary(p.line)
	return idx >= 0
}

// parsePart parses one entity starting at the current line. digest says the
// parent is multipart/digest, whose parts default to message/rfc822.
func (p *mimeParser) parsePart(digest bool, depth int) *part {
	p.nparts++
	pt := &part{hdrOff: p.off, bodyOff: -1}
	var hdr bytes.Buffer
	for {
		line, ok := p.peek()
		if !ok {
			break
		}
		if idx, _ := p.boundary(line); idx >= 0 {
			break
		}
		p.consume()
		if !p.long && (string(line) == "\r\n" || string(line) == "\n") {
			pt.bodyOff = p.off
			break
		}
		if hdr.Len()+len(line) <= maxHeaderBytes {
			hdr.Write(line)
		}
	}
	if pt.bodyOff < 0 { // no blank line: the entity is all header
		pt.bodyOff = p.off
	}
	hdr.WriteString("\r\n")
	pt.header, _ = textproto.ReadHeader(bufio.NewReader(&hdr))

	h := gomessage.Header{Header: pt.header}
	mt, params, err := h.ContentType()
	switch {
	case err == nil && strings.Contains(mt, "/") && pt.header.Has("Content-Type"):
		pt.mediaType, pt.params = mt, params
	case digest && !pt.header.Has("Content-Type"):
		pt.mediaType = "message/rfc822"
	default:
		pt.mediaType, pt.params = "text/plain", map[string]string{"charset": "us-ascii"}
	}
	pt.encoding = strings.ToLower(strings.TrimSpace(pt.header.Get("Content-Transfer-Encoding")))

	lfStart := p.lfs
	nested := depth < maxMIMEDepth && p.nparts < maxMIMEParts
	switch {
	case strings.HasPrefix(pt.mediaType, "multipart/") && pt.params["boundary"] != "" && nested:
		p.parseMultipart(pt, depth)
	case (pt.mediaType == "message/rfc822" || pt.mediaType == "message/global") && nested:
		pt.msg = p.parsePart(false, depth+1)
	default:
		p.skipBody()
	}
	p.finish(pt, lfStart)
	return pt
}

// skipBody consumes lines until a delimiter of an enclosing multipart or
// EOF. Runs of whole lines that cannot hold a delimiter (no "\n--" in
// them) are skipped in one step, so large attachments cost little more
// than a scan for line feeds.
func (p *mimeParser) skipBody() {
	for {
		if !p.peeked {
			if n := p.skipPlain(); n > 0 {
				continue
			}
		}
		line, ok := p.peek()
		if !ok {
			return
		}
		if idx, _ := p.boundary(line); idx >= 0 {
			return
		}
		p.consume()
	}
}

// skipPlain consumes the buffered whole lines before the next line that
// starts with "--", and returns how many octets it consumed.
func (p *mimeParser) skipPlain() int {
	b, _ := p.br.Peek(p.br.Buffered())
	if len(b) == 0 || bytes.HasPrefix(b, []byte("--")) {
		return 0
	}
	cut := bytes.Index(b, []byte("\n--")) + 1
	if cut <= 0 {
		cut = bytes.LastIndexByte(b, '\n') + 1
	}
	if cut <= 0 {
		return 0
	}
	chunk := b[:cut]
	p.lfs += int64(bytes.Count(chunk, []byte("\n")))
	p.lastLen = cut - 1 - bytes.LastIndexByte(chunk[:cut-1], '\n')
	p.lastLF = true
	p.off += int64(cut)
	p.br.Discard(cut) //nolint:errcheck // cut octets are buffered
	return cut
}

// finish sets pt.end and pt.lines. The CRLF before a delimiter line belongs
// to the delimiter (RFC 2046 5.1.1), so a part cut by one ends two octets
// earlier; a last line without a line ending still counts as a line.
func (p *mimeParser) finish(pt *part, lfStart int64) {
	pt.end = p.off
	lfs := p.lfs - lfStart
	endsWithLF := p.lastLF
	if p.atDelimiter() && pt.end-2 >= pt.hdrOff {
		pt.end -= 2
		// A header-only entity gives the CRLF up too, and so does a last
		// part or enclosed message too short to give it up itself (empty,
		// as a digest part with no blank line encloses, or a multipart's
		// first part cut by an enclosing delimiter).
		clampPart(pt, pt.end)
		if lfs > 0 {
			lfs--
		}
		endsWithLF = p.lastLen == 2 // the cut line was empty
	}
	if pt.end == pt.bodyOff {
		lfs, endsWithLF = 0, true
	}
	pt.lines = lfs
	if !endsWithLF {
		pt.lines++
	}
}

// clampPart moves every offset of pt and its parts beyond end to end.
func clampPart(pt *part, end int64) {
	pt.hdrOff, pt.bodyOff, pt.end = min(pt.hdrOff, end), min(pt.bodyOff, end), min(pt.end, end)
	if pt.end == pt.bodyOff {
		pt.lines = 0
	}
	for _, c := range pt.children {
		clampPart(c, end)
	}
	if pt.msg != nil {
		clampPart(pt.msg, end)
	}
}

func (p *mimeParser) parseMultipart(pt *part, depth int) {
	p.bounds = append(p.bounds, pt.params["boundary"])
	own := len(p.bounds) - 1
	defer func() { p.bounds = p.bounds[:own] }()

	// Preamble, up to the first delimiter.
	closed := false
	for {
		line, ok := p.peek()
		if !ok {
			return
		}
		idx, final := p.boundary(line)
		if idx >= 0 && idx < own {
			return
		}
		p.consume()
		if idx == own {
			closed = final
			break
		}
	}
	for !closed {
		if p.nparts >= maxMIMEParts {
			p.bounds = p.bounds[:own] // the rest is opaque content
			break
		}
		child := p.parsePart(pt.mediaType == "multipart/digest", depth+1)
		pt.children = append(pt.children, child)
		line, ok := p.peek()
		if !ok {
			return
		}
		idx, final := p.boundary(line)
		if idx != own {
			return // an enclosing delimiter ends this multipart too
		}
		p.consume()
		closed = final
	}
	// The epilogue: after the close delimiter only an enclosing
	// multipart's delimiter ends it, not a repeated one of this one.
	p.bounds = p.bounds[:own]
	p.skipBody()
}
