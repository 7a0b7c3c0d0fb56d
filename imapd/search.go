package imapd

import (
	"errors"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode every charset MIME uses when searching

	"github.com/roost-mail/roost/backend"
)

// maxSearchPart bounds the decoded text of one part that BODY and TEXT
// search, so a huge attachment cannot exhaust memory.
const maxSearchPart = 16 << 20

// Search implements SEARCH and UID SEARCH with every key go-imap parses,
// ESEARCH results (RFC 4731) and SEARCHRES (RFC 5182). Keys on flags,
// dates, sizes and numbers cost no file access (but LARGER and SMALLER on
// a size the store has not measured yet, size.go); FROM, TO, CC, BCC, SUBJECT
// and SENTBEFORE/ON/SINCE use the cached ENVELOPE; HEADER reads the
// header; BODY and TEXT decode each text part's transfer encoding and
// charset and compare case-insensitively. Programs beyond the limits of
// searchprog.go are refused before any message is read, and a search that
// reads messages stops when the client disconnects.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, opts *imap.SearchOptions) (*imap.SearchData, error) {
	defer s.timed("SEARCH")()
	prog, content, err := s.compileSearch(criteria)
	if err != nil {
		return nil, err
	}
	if content {
		// A search that reads messages can take minutes on a big mailbox:
		// stop it when the client goes away.
		defer s.cc.watchPeer(s.cancel)()
	}
	cur, _ := s.sel.st.current()
	var matches []int
	for k := range s.sel.view.Messages() {
		if k%64 == 0 && s.ctx.Err() != nil {
			s.log.Info("search stopped: connection closed", "scanned", k, "messages", len(s.sel.view.Messages()))
			return nil, s.fail("search", s.ctx.Err())
		}
		vm := &s.sel.view.Messages()[k]
		sm := &searchMsg{s: s, m: vm, seq: uint32(k + 1)}
		if ci := cur.Find(vm.UID); ci >= 0 {
			sm.m, sm.exists = &cur.Messages()[ci], true
		}
		if sm.match(prog) {
			matches = append(matches, k)
		}
		if sm.err != nil {
			return nil, s.fail("search", sm.err)
		}
	}
	data := &imap.SearchData{Count: uint32(len(matches))}
	uids := s.uidsOf(matches)
	if opts.ReturnSave {
		s.sel.searchRes = uids
	}
	if kind == imapserver.NumKindUID {
		var set imap.UIDSet
		for _, uid := range uids {
			set.AddNum(imap.UID(uid))
		}
		data.All = set
		if len(uids) > 0 {
			data.Min, data.Max = uint32(uids[0]), uint32(uids[len(uids)-1])
		}
	} else {
		var set imap.SeqSet
		for _, k := range matches {
			set.AddNum(uint32(k + 1))
		}
		data.All = set
		if len(matches) > 0 {
			data.Min, data.Max = uint32(matches[0]+1), uint32(matches[len(matches)-1]+1)
		}
	}
	return data, nil
}

// searchMsg is one message under test; content is loaded once, on demand.
type searchMsg struct {
	s      *session
	m      *backend.Message
	seq    uint32
	exists bool

	info    *msgInfo
	hdr     *gomessage.Header
	hdrText string
	texts   []string // decoded text parts, lower-cased
	size    int64    // m.Size, or the store's measure; -1 if the message is gone
	loaded  int      // bit 1: info, 2: header, 4: texts, 8: size
	err     error    // the store could not say the size: the search fails
}

// match evaluates p, cheapest keys first, so that content is read only
// for messages that pass the keys on flags, dates, numbers and sizes (a
// size the store has not measured costs a read, hence after dates).
func (sm *searchMsg) match(p *searchProg) bool {
	m := sm.m
	for _, rs := range p.seqs {
		if !inRanges(rs, sm.seq) {
			return false
		}
	}
	for _, rs := range p.uids {
		if !inRanges(rs, uint32(m.UID)) {
			return false
		}
	}
	for _, f := range p.flags {
		if !sm.hasFlag(f) {
			return false
		}
	}
	for _, f := range p.notFlags {
		if sm.hasFlag(f) {
			return false
		}
	}
	if !inDateRange(m.InternalDate, p.since, p.before) {
		return false
	}
	if p.larger > 0 || p.smaller > 0 {
		size := sm.loadSize()
		if size < 0 || p.larger > 0 && size <= p.larger || p.smaller > 0 && size >= p.smaller {
			return false
		}
	}
	for _, not := range p.nots {
		if sm.match(not) {
			return false
		}
	}
	for _, or := range p.ors {
		if !sm.match(or[0]) && !sm.match(or[1]) {
			return false
		}
	}
	if !p.sentSince.IsZero() || !p.sentBefore.IsZero() {
		info := sm.loadInfo()
		if info == nil || info.env.Date.IsZero() || !inDateRange(info.env.Date, p.sentSince, p.sentBefore) {
			return false
		}
	}
	for _, h := range p.headers {
		if !sm.matchHeader(h.key, h.value) {
			return false
		}
	}
	for _, b := range p.bodies {
		if !sm.matchBody(b, false) {
			return false
		}
	}
	for _, t := range p.texts {
		if !sm.matchBody(t, true) {
			return false
		}
	}
	return true
}

func (sm *searchMsg) hasFlag(f imap.Flag) bool {
	if strings.EqualFold(string(f), `\Recent`) {
		return sm.s.sel.recent[sm.m.UID]
	}
	if bf, ok := backend.ParseFlag(string(f)); ok {
		return sm.m.Flags&bf != 0
	}
	return sm.m.HasKeyword(string(f))
}

// inDateRange compares dates only, in t's own time zone, as RFC 3501
// 6.4.4 asks ("disregarding time and timezone").
func inDateRange(t, since, before time.Time) bool {
	if since.IsZero() && before.IsZero() {
		return true
	}
	y, mo, d := t.Date()
	day := time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && day.Before(since) {
		return false
	}
	return before.IsZero() || day.Before(before)
}

// loadSize returns the message's size, or -1 if it was expunged: like
// the content keys, LARGER and SMALLER match no expunged message whose
// size is unknown.
func (sm *searchMsg) loadSize() int64 {
	if sm.loaded&8 == 0 {
		sm.loaded |= 8
		sm.size = sm.m.Size
		if sm.size < 0 && sm.exists {
			n, err := sm.s.messageSize(sm.m)
			switch {
			case err == nil:
				sm.size = n
			case !errors.Is(err, backend.ErrNoSuchMessage):
				sm.err = err
			}
		}
	}
	return sm.size
}

func (sm *searchMsg) loadInfo() *msgInfo {
	if sm.loaded&1 == 0 {
		sm.loaded |= 1
		if sm.exists {
			sm.info, _ = sm.s.messageInfo(sm.m, false)
		}
	}
	return sm.info
}

// matchHeader implements HEADER, FROM, TO, CC, BCC and SUBJECT: a
// case-insensitive substring of the decoded field; an empty value matches
// any message that has the field (RFC 3501 6.4.4). key and want are
// lower-cased.
func (sm *searchMsg) matchHeader(key, want string) bool {
	switch key {
	case "from", "to", "cc", "bcc", "subject":
		if want == "" {
			break // presence needs the header itself
		}
		info := sm.loadInfo()
		if info == nil {
			return false
		}
		env := info.env
		if key == "subject" {
			return strings.Contains(strings.ToLower(env.Subject), want)
		}
		var addrs []imap.Address
		switch key {
		case "from":
			addrs = env.From
		case "to":
			addrs = env.To
		case "cc":
			addrs = env.Cc
		case "bcc":
			addrs = env.Bcc
		}
		for _, a := range addrs {
			s := strings.ToLower(a.Name + " <" + a.Mailbox + "@" + a.Host + ">")
			if strings.Contains(s, want) {
				return true
			}
		}
		return false
	}
	h := sm.loadHeader()
	if h == nil {
		return false
	}
	fields := h.FieldsByKey(key)
	for fields.Next() {
		if want == "" {
			return true
		}
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		if strings.Contains(strings.ToLower(v), want) {
			return true
		}
	}
	return false
}

func (sm *searchMsg) loadHeader() *gomessage.Header {
	if sm.loaded&2 == 0 {
		sm.loaded |= 2
		if !sm.exists {
			return nil
		}
		r, err := sm.s.sel.st.mbox.OpenMessage(sm.s.ctx, sm.m.UID)
		if err != nil {
			return nil
		}
		defer r.Close()
		raw, _, err := readHeaderBlock(r)
		if err != nil {
			return nil
		}
		sm.setHeader(gomessage.Header{Header: parseHeader(raw)})
	}
	return sm.hdr
}

// setHeader keeps h, and its text with RFC 2047 encoded words decoded
// (what TEXT searches besides the body).
func (sm *searchMsg) setHeader(h gomessage.Header) {
	var b strings.Builder
	fields := h.Fields()
	for fields.Next() {
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		b.WriteString(fields.Key())
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	sm.hdr, sm.hdrText = &h, strings.ToLower(b.String())
}

// matchBody implements BODY (withHeader false) and TEXT; want is
// lower-cased.
func (sm *searchMsg) matchBody(want string, withHeader bool) bool {
	sm.loadTexts()
	if withHeader {
		if sm.loadHeader() == nil {
			return false
		}
		if strings.Contains(sm.hdrText, want) {
			return true
		}
	}
	for _, t := range sm.texts {
		if strings.Contains(t, want) {
			return true
		}
	}
	return false
}

// loadTexts reads the decoded, lower-cased text of every text part, and
// keeps the header it parsed on the way, so that TEXT reads each message
// once.
func (sm *searchMsg) loadTexts() {
	if sm.loaded&4 != 0 {
		return
	}
	sm.loaded |= 4
	if !sm.exists {
		return
	}
	r, err := sm.s.sel.st.mbox.OpenMessage(sm.s.ctx, sm.m.UID)
	if err != nil {
		return
	}
	defer r.Close()
	e, _ := gomessage.Read(r)
	if e == nil {
		return
	}
	if sm.loaded&2 == 0 {
		sm.loaded |= 2
		sm.setHeader(e.Header)
	}
	_ = e.Walk(func(_ []int, part *gomessage.Entity, err error) error {
		if err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if mt != "" && !strings.HasPrefix(mt, "text/") {
			return nil
		}
		b, _ := io.ReadAll(io.LimitReader(part.Body, maxSearchPart))
		sm.texts = append(sm.texts, strings.ToLower(string(b)))
		return nil
	})
}
