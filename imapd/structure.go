package imapd

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// readHeaderBlock reads the header of a message, up to and including the
// blank line, keeping at most maxHeaderBytes of it. n is the octet length
// of the whole header block (the offset of the body).
func readHeaderBlock(r io.Reader) (hdr []byte, n int64, err error) {
	br := bufio.NewReaderSize(r, 4<<10)
	var buf bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		if err != nil && err != io.EOF && !long {
			return nil, 0, err
		}
		if len(line) == 0 {
			return buf.Bytes(), n, nil
		}
		n += int64(len(line))
		if buf.Len()+len(line) <= maxHeaderBytes {
			buf.Write(line)
		}
		if !long && (string(line) == "\r\n" || string(line) == "\n") {
			return buf.Bytes(), n, nil
		}
		if err == io.EOF {
			return buf.Bytes(), n, nil
		}
	}
}

// parseHeader parses raw header bytes leniently: a malformed line ends the
// header, keeping what came before.
func parseHeader(raw []byte) textproto.Header {
	b := raw
	if !bytes.HasSuffix(b, []byte("\r\n\r\n")) && !bytes.HasSuffix(b, []byte("\n\n")) {
		b = append(append([]byte(nil), raw...), "\r\n"...)
	}
	h, _ := textproto.ReadHeader(bufio.NewReaderSize(bytes.NewReader(b), 512))
	return h
}

// bodyStructure builds the extended BODYSTRUCTURE of pt (RFC 3501 7.4.2);
// BODY is written from the same value without the extension data.
func bodyStructure(pt *part) imap.BodyStructure {
	h := gomessage.Header{Header: pt.header}
	disp := dispositionOf(h)
	lang := languageOf(h)
	loc := h.Get("Content-Location")
	typ, sub, _ := strings.Cut(pt.mediaType, "/")
	if typ == "multipart" {
		bs := &imap.BodyStructureMultiPart{
			Subtype:  sub,
			Extended: &imap.BodyStructureMultiPartExt{Params: pt.params, Disposition: disp, Language: lang, Location: loc},
		}
		for _, c := range pt.children {
			bs.Children = append(bs.Children, bodyStructure(c))
		}
		if len(bs.Children) == 0 { // RFC 3501 needs at least one part
			bs.Children = append(bs.Children, &imap.BodyStructureSinglePart{
				Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"},
				Encoding: "7bit", Text: &imap.BodyStructureText{}, Extended: &imap.BodyStructureSinglePartExt{},
			})
		}
		return bs
	}
	bs := &imap.BodyStructureSinglePart{
		Type:        typ,
		Subtype:     sub,
		Params:      pt.params,
		ID:          h.Get("Content-Id"),
		Description: h.Get("Content-Description"),
		Encoding:    pt.encoding,
		Size:        uint32(pt.end - pt.bodyOff),
		Extended:    &imap.BodyStructureSinglePartExt{Disposition: disp, Language: lang, Location: loc},
	}
	if bs.Encoding == "" {
		bs.Encoding = "7bit"
	}
	switch {
	case pt.msg != nil:
		bs.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      imapserver.ExtractEnvelope(pt.msg.header),
			BodyStructure: bodyStructure(pt.msg),
			NumLines:      pt.lines,
		}
	case typ == "text":
		bs.Text = &imap.BodyStructureText{NumLines: pt.lines}
	}
	return bs
}

func dispositionOf(h gomessage.Header) *imap.BodyStructureDisposition {
	disp, params, err := h.ContentDisposition()
	if disp == "" || err != nil && params == nil {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: disp, Params: params}
}

func languageOf(h gomessage.Header) []string {
	v := h.Get("Content-Language")
	if v == "" {
		return nil
	}
	var l []string
	for _, lang := range strings.Split(v, ",") {
		if lang = strings.TrimSpace(lang); lang != "" {
			l = append(l, lang)
		}
	}
	return l
}

// stripHeaders drops the parsed header fields from a tree once its
// BODYSTRUCTURE is built, so a cached tree keeps only offsets and types.
func stripHeaders(pt *part) {
	pt.header = textproto.Header{}
	for _, c := range pt.children {
		stripHeaders(c)
	}
	if pt.msg != nil {
		stripHeaders(pt.msg)
	}
}

// step returns part n of the body of entity pt (RFC 3501 6.4.5): a child of
// a multipart, a part of an enclosed message, or the entity itself for
// part 1 of a single-part body. It returns nil if there is no such part.
func step(pt *part, n int) *part {
	switch {
	case len(pt.children) > 0:
		if n < 1 || n > len(pt.children) {
			return nil
		}
		return pt.children[n-1]
	case pt.msg != nil:
		return step(pt.msg, n)
	case n == 1:
		return pt
	}
	return nil
}

// findPart resolves a section part path against the message root.
func findPart(root *part, path []int) *part {
	pt := root
	for _, n := range path {
		if pt = step(pt, n); pt == nil {
			return nil
		}
	}
	return pt
}

// filterHeader returns the fields of a raw header block whose names are in
// names (not is false) or not in names (not is true), followed by the blank
// line, byte for byte (RFC 3501 HEADER.FIELDS, HEADER.FIELDS.NOT).
func filterHeader(raw []byte, names []string, not bool) []byte {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[strings.ToLower(n)] = true
	}
	var out bytes.Buffer
	keep := false
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := raw
		if i >= 0 {
			line = raw[:i+1]
		}
		raw = raw[len(line):]
		if string(line) == "\r\n" || string(line) == "\n" {
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, ok := bytes.Cut(line, []byte(":"))
			keep = false
			if ok {
				keep = want[strings.ToLower(strings.TrimRight(string(name), " \t"))] != not
			}
		}
		if keep {
			out.Write(line)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}
