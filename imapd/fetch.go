package imapd

import (
	"errors"
	"fmt"
	"strconv"

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
	it := newFetchItems(opts, ww != nil)
	// Messages the cache holds are taken from it here; from the first
	// that it does not, infoPrefetch loads them ahead of the writer.
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
		if it.needInfo && pre == nil {
			if info := s.cachedInfo(vm, it.needTree, it.needWire); info != nil {
				hit = infoSlot{info: info}
				slot = &hit
			} else if pre = s.startPrefetch(view, idx, i, it.needTree, it.needWire); pre != nil {
				defer pre.close()
			}
		}
		if pre != nil {
			slot = pre.get(i)
		}
		err := s.fetchOne(w, ww, &scratch, slot, uint32(k+1), vm, m, &it, seen, exists)
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
// msgInfo as loadInfo gives it (from the cache or infoPrefetch). vm is
// the message as the view has it, m as it is now. Every file a section streams from is opened before
// the response begins, so a message whose file is gone is left out (the
// caller answers NO [EXPUNGEISSUED], RFC 2180 4.1) instead of being sent
// with empty or made-up content; an open file stays readable even if
// another process removes it meanwhile.
func (s *session) fetchOne(w *imapserver.FetchWriter, ww *wireWriter, scratch *fetchScratch, slot *infoSlot, seq uint32, vm, m *backend.Message, it *fetchItems, flagsChanged, exists bool) error {
	opts := it.opts
	if (it.needInfo || len(opts.BodySection) > 0 || len(opts.BinarySection) > 0) && !exists {
		return errNeedsContent
	}
	size := int64(-1) // m's size, asked for only if an item needs it
	if it.needSize {
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
	if it.needInfo {
		var err error
		if slot != nil {
			info, err = slot.info, slot.err
		} else {
			info, err = s.loadInfo(m, it.needTree, it.needWire, scratch)
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
		if s.flagsDiffer(vm, m) {
			s.tell(m)
		}
	}
	if ww != nil {
		if len(m.Keywords) == 0 || flagsValid(flags) {
			return s.wireOne(ww, seq, m, opts, wantFlags, flags, size, info)
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

// fetchScratch holds buffers one FETCH reuses from message to message.
type fetchScratch struct {
	hdr  []byte // header block being read
	copy []byte // body section being streamed
	wire []byte // ENVELOPE being encoded for the cache
}

// fetchItems is a FETCH's items and what they need of each message,
// worked out once per command.
type fetchItems struct {
	opts                                   *imap.FetchOptions
	needInfo, needTree, needSize, needWire bool
}

// newFetchItems works out what opts need; wire says wireWriter writes the
// responses.
func newFetchItems(opts *imap.FetchOptions, wire bool) fetchItems {
	it := fetchItems{opts: opts, needSize: fetchNeedsSize(opts), needWire: wire && opts.Envelope}
	it.needInfo, it.needTree = fetchNeeds(opts)
	return it
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
