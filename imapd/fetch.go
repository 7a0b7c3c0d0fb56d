package imapd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/roost-mail/roost/backend"
)

// Fetch implements FETCH and UID FETCH (RFC 3501 6.4.5, RFC 3516 BINARY).
// Data kept in the snapshot (FLAGS, UID, INTERNALDATE, RFC822.SIZE) costs
// no file access, but for a size the store has not measured yet (size.go);
// ENVELOPE and BODYSTRUCTURE come from the cache or one read of the
// message; body sections are byte ranges of the file, streamed.
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, opts *imap.FetchOptions) error {
	defer s.timed("FETCH")()
	idx, err := s.resolve(numSet)
	if err != nil {
		return err
	}
	sel := s.sel
	cur, _ := sel.st.current()
	flush := s.cc.batch()
	defer flush() //nolint:errcheck // a failed write fails the next one too

	// Reading a body section sets \Seen (RFC 3501 6.4.5), never in a
	// read-only mailbox.
	var seenNow map[backend.UID]backend.Message
	if !sel.readOnly && setsSeen(opts) {
		var uids []backend.UID
		view, curMsgs := sel.view.Messages(), cur.Messages()
		for _, k := range idx {
			uid := view[k].UID
			if ci := cur.Find(uid); ci >= 0 && curMsgs[ci].Flags&backend.FlagSeen == 0 {
				uids = append(uids, uid)
			}
		}
		if len(uids) > 0 {
			msgs, err := sel.st.mbox.SetFlags(s.ctx, uids, backend.FlagsAdd, backend.FlagSeen, nil)
			if err != nil {
				return s.fail("set \\Seen", err)
			}
			seenNow = make(map[backend.UID]backend.Message, len(msgs))
			for _, m := range msgs {
				seenNow[m.UID] = m
			}
			defer sel.st.forceSync(s.ctx) //nolint:errcheck // the next poll reports a failure
		}
	}

	// Responses of in-memory items only are written by wireWriter, the
	// rest by go-imap.
	var ww *wireWriter
	if wireFetch(opts) {
		ww = newWireWriter(s.conn.NetConn(), s.conn.EnabledCaps())
		defer ww.flush() //nolint:errcheck // as flush above; runs first
	}
	var scratch fetchScratch
	gone := false
	view, curMsgs := sel.view.Messages(), cur.Messages()
	// Messages the cache holds are taken from it here; from the first
	// that it does not, infoPrefetch loads them ahead of the writer.
	needInfo, needTree := fetchNeeds(opts)
	needWire := ww != nil && opts.Envelope
	var pre *infoPrefetch
	var hit infoSlot
	for i, k := range idx {
		vm := &view[k]
		m, exists := vm, sel.view == cur
		if !exists {
			if ci := cur.Find(vm.UID); ci >= 0 {
				m, exists = &curMsgs[ci], true
			}
		}
		nm, seen := seenNow[vm.UID]
		if seen {
			m = &nm
		}
		// A message has the same key in the view and now, so the view's
		// names it for the cache.
		var slot *infoSlot
		if needInfo && pre == nil {
			if info := s.cachedInfo(vm, needTree, needWire); info != nil {
				hit = infoSlot{info: info}
				slot = &hit
			} else if pre = s.startPrefetch(view, idx, i, needTree, needWire); pre != nil {
				defer pre.close()
			}
		}
		if pre != nil {
			slot = pre.get(i)
		}
		err := s.fetchOne(w, ww, &scratch, slot, uint32(k+1), vm, m, opts, seen, exists)
		if pre != nil {
			pre.done(i)
		}
		if errors.Is(err, backend.ErrNoSuchMessage) || errors.Is(err, errNeedsContent) {
			gone = true
			continue
		}
		if err != nil {
			return err
		}
	}
	if err := ww.flush(); err != nil {
		return err
	}
	if gone {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "EXPUNGEISSUED",
			Text: "Some messages were expunged by another session and were not returned"}
	}
	return nil
}

// errNeedsContent: the content of an expunged message was asked for, or
// a size the store had not measured.
var errNeedsContent = errors.New("message content needed")

func setsSeen(opts *imap.FetchOptions) bool {
	for _, bs := range opts.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range opts.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

// fetchOne writes one FETCH response, through ww if it is not nil
// (wireFetch), else through go-imap. slot, if not nil, has the message's
// msgInfo as loadInfo gives it (from the cache or infoPrefetch). vm is the message as the view has
// it, m as it is now. Every file a section streams from is opened before
// the response begins, so a message whose file is gone is left out (the
// caller answers NO [EXPUNGEISSUED], RFC 2180 4.1) instead of being sent
// with empty or made-up content; an open file stays readable even if
// another process removes it meanwhile.
func (s *session) fetchOne(w *imapserver.FetchWriter, ww *wireWriter, scratch *fetchScratch, slot *infoSlot, seq uint32, vm, m *backend.Message, opts *imap.FetchOptions, flagsChanged, exists bool) error {
	needInfo, needTree := fetchNeeds(opts)
	if (needInfo || len(opts.BodySection) > 0 || len(opts.BinarySection) > 0) && !exists {
		return errNeedsContent
	}
	size := int64(-1) // m's size, asked for only if an item needs it
	if fetchNeedsSize(opts) {
		if !exists && m.Size < 0 {
			return errNeedsContent // expunged before it was measured
		}
		var err error
		size, err = s.messageSize(m)
		if errors.Is(err, backend.ErrNoSuchMessage) {
			return err // expunged meanwhile: left out, NO [EXPUNGEISSUED]
		}
		if err != nil {
			return s.fail("fetch", err)
		}
	}
	var info *msgInfo
	if needInfo {
		var err error
		if slot != nil {
			info, err = slot.info, slot.err
		} else {
			info, err = s.loadInfo(m, needTree, ww != nil && opts.Envelope, scratch)
		}
		if err != nil {
			return err
		}
	}
	var plans []sectionPlan
	if n := len(opts.BodySection) + len(opts.BinarySection); n > 0 {
		plans = make([]sectionPlan, 0, n)
		defer func() {
			for i := range plans {
				plans[i].close()
			}
		}()
	}
	for _, sec := range opts.BodySection {
		p, err := s.planBody(m, size, info, sec)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	for _, sec := range opts.BinarySection {
		p, err := s.planBinary(m, size, info, sec.Part, sec.Partial)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	var binSizes []int64
	for _, sec := range opts.BinarySectionSize {
		p, err := s.planBinary(m, size, info, sec.Part, nil)
		if err != nil {
			return err
		}
		binSizes = append(binSizes, p.size)
	}
	for i := range plans {
		if err := s.openPlan(m, &plans[i]); err != nil {
			return err
		}
	}

	wantFlags := opts.Flags || flagsChanged
	var flags []imap.Flag
	if wantFlags {
		flags = s.flagsOf(m)
	}
	if ww != nil {
		if len(m.Keywords) == 0 || flagsValid(flags) {
			return s.wireOne(ww, seq, vm, m, opts, wantFlags, flags, size, info)
		}
		// go-imap refuses the flag: let it fail as it does.
		if err := ww.flush(); err != nil {
			return err
		}
	}
	rw := w.CreateMessage(seq)
	if opts.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if wantFlags {
		rw.WriteFlags(flags)
		if s.flagsDiffer(vm, m) {
			s.tell(m)
		}
	}
	if opts.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if opts.RFC822Size {
		rw.WriteRFC822Size(size)
	}
	if opts.Envelope {
		rw.WriteEnvelope(info.env)
	}
	if opts.BodyStructure != nil {
		rw.WriteBodyStructure(info.bs)
	}
	var werr error
	for i, sec := range opts.BodySection {
		wc := rw.WriteBodySection(sec, plans[i].size)
		werr = errors.Join(werr, s.emit(wc, m, &plans[i], scratch), wc.Close())
	}
	for i, sec := range opts.BinarySection {
		p := &plans[len(opts.BodySection)+i]
		wc := rw.WriteBinarySection(sec, p.size)
		werr = errors.Join(werr, s.emit(wc, m, p, scratch), wc.Close())
	}
	for i, sec := range opts.BinarySectionSize {
		rw.WriteBinarySectionSize(sec, uint32(binSizes[i]))
	}
	return errors.Join(werr, rw.Close())
}

// wireOne is fetchOne's writing of a wireFetch response, item for item
// as go-imap's.
func (s *session) wireOne(ww *wireWriter, seq uint32, vm, m *backend.Message, opts *imap.FetchOptions, wantFlags bool, flags []imap.Flag, size int64, info *msgInfo) error {
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
		if s.flagsDiffer(vm, m) {
			s.tell(m)
		}
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

// fetchScratch holds buffers one FETCH reuses from message to message.
type fetchScratch struct {
	hdr  []byte // header block being read
	copy []byte // body section being streamed
	wire []byte // ENVELOPE being encoded for the cache
}

// fetchNeeds says whether a FETCH needs the content-derived msgInfo of
// each message, and whether with the MIME structure.
func fetchNeeds(opts *imap.FetchOptions) (needInfo, needTree bool) {
	needTree = opts.BodyStructure != nil || len(opts.BinarySectionSize) > 0
	needInfo = opts.Envelope || needTree
	for _, bs := range opts.BodySection {
		// BODY[] is the whole file; every other section needs the header
		// length or the MIME structure.
		needInfo = needInfo || len(bs.Part) > 0 || bs.Specifier != imap.PartSpecifierNone
		needTree = needTree || len(bs.Part) > 0
	}
	for _, bs := range opts.BinarySection {
		needInfo = needInfo || len(bs.Part) > 0
		needTree = needTree || len(bs.Part) > 0
	}
	return needInfo, needTree
}

// messageInfo returns the cached content-derived data of m, reading the
// message if the cache lacks it. needTree asks for the MIME structure.
func (s *session) messageInfo(m *backend.Message, needTree bool) (*msgInfo, error) {
	return s.loadInfo(m, needTree, false, &fetchScratch{})
}

// infoKey is m's key in the cache.
func (s *session) infoKey(m *backend.Message) cacheKey {
	key := cacheKey{user: s.username, msg: m.Key}
	if m.Key == "" {
		key.msg = s.sel.st.key + "\x00" + strconv.FormatUint(uint64(s.sel.view.UIDValidity), 10) +
			"\x00" + strconv.FormatUint(uint64(m.UID), 10)
	}
	return key
}

// cachedInfo returns what loadInfo would if the cache has it all, else
// nil.
func (s *session) cachedInfo(m *backend.Message, needTree, needWire bool) *msgInfo {
	info := s.srv.cache.get(s.infoKey(m))
	if info == nil || needTree && info.tree == nil || needWire && info.wire == nil {
		return nil
	}
	return info
}

// loadInfo is messageInfo with a scratch buffer for reading the header;
// needWire asks for the ENVELOPE's wire form too (wireEnvelope).
func (s *session) loadInfo(m *backend.Message, needTree, needWire bool, scratch *fetchScratch) (*msgInfo, error) {
	key := s.infoKey(m)
	if info := s.srv.cache.get(key); info != nil && (!needTree || info.tree != nil) {
		if needWire && info.wire == nil {
			// Cached by a command that did not need it (SEARCH, a
			// FETCH through go-imap): a cached msgInfo never changes,
			// so a copy with the wire form replaces it.
			withWire := *info
			withWire.wire, withWire.wireUTF8, scratch.wire = wireEnvelope(info.env, scratch.wire)
			s.srv.cache.put(key, &withWire)
			return &withWire, nil
		}
		return info, nil
	}
	r, err := s.sel.st.mbox.OpenMessage(s.ctx, m.UID)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var info *msgInfo
	if needTree {
		root, err := parseMessage(r)
		if err != nil {
			return nil, fmt.Errorf("read message %d: %w", m.UID, err)
		}
		info = &msgInfo{env: imapserver.ExtractEnvelope(root.header), hdrLen: root.bodyOff, bs: bodyStructure(root), tree: root}
		stripHeaders(root)
	} else {
		var hdr []byte
		var n int64
		hdr, n, scratch.hdr, err = readHeaderInto(r, scratch.hdr)
		if err != nil {
			return nil, fmt.Errorf("read message %d: %w", m.UID, err)
		}
		info = &msgInfo{env: envelopeOf(hdr), hdrLen: n}
	}
	if needWire {
		info.wire, info.wireUTF8, scratch.wire = wireEnvelope(info.env, scratch.wire)
	}
	s.srv.cache.put(key, info)
	return info, nil
}

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
