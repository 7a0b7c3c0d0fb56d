package imapd

import (
	"io"
	"slices"
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
// dates, sizes and numbers cost no file access; FROM, TO, CC, BCC, SUBJECT
// and SENTBEFORE/ON/SINCE use the cached ENVELOPE; HEADER reads the
// header; BODY and TEXT decode each text part's transfer encoding and
// charset and compare case-insensitively.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, opts *imap.SearchOptions) (*imap.SearchData, error) {
	defer s.timed("SEARCH")()
	cur, _ := s.sel.st.current()
	var matches []int
	for k := range s.sel.view.Messages {
		vm := &s.sel.view.Messages[k]
		sm := &searchMsg{s: s, m: vm, seq: uint32(k + 1)}
		if ci := cur.Find(vm.UID); ci >= 0 {
			sm.m, sm.exists = &cur.Messages[ci], true
		}
		if sm.match(criteria) {
			matches = append(matches, k)
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
	loaded  int      // bit 1: info, 2: header, 4: texts
}

func (sm *searchMsg) match(c *imap.SearchCriteria) bool {
	m := sm.m
	for _, set := range c.SeqNum {
		if !seqContains(set, sm.seq, uint32(len(sm.s.sel.view.Messages))) {
			return false
		}
	}
	for _, set := range c.UID {
		if imap.IsSearchRes(set) {
			if _, ok := slices.BinarySearch(sm.s.sel.searchRes, m.UID); !ok {
				return false
			}
		} else if !uidContains(set, imap.UID(m.UID), sm.s.sel.view) {
			return false
		}
	}
	for _, f := range c.Flag {
		if !sm.hasFlag(f) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if sm.hasFlag(f) {
			return false
		}
	}
	if c.Larger > 0 && m.Size <= c.Larger || c.Smaller > 0 && m.Size >= c.Smaller {
		return false
	}
	if !inDateRange(m.InternalDate, c.Since, c.Before) {
		return false
	}
	for _, not := range c.Not {
		if sm.match(&not) {
			return false
		}
	}
	for _, or := range c.Or {
		if !sm.match(&or[0]) && !sm.match(&or[1]) {
			return false
		}
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		info := sm.loadInfo()
		if info == nil || info.env.Date.IsZero() || !inDateRange(info.env.Date, c.SentSince, c.SentBefore) {
			return false
		}
	}
	for _, hf := range c.Header {
		if !sm.matchHeader(hf.Key, hf.Value) {
			return false
		}
	}
	for _, b := range c.Body {
		if !sm.matchBody(b, false) {
			return false
		}
	}
	for _, t := range c.Text {
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
// any message that has the field (RFC 3501 6.4.4).
func (sm *searchMsg) matchHeader(key, value string) bool {
	want := strings.ToLower(value)
	switch strings.ToLower(key) {
	case "from", "to", "cc", "bcc", "subject":
		if value == "" {
			break // presence needs the header itself
		}
		info := sm.loadInfo()
		if info == nil {
			return false
		}
		env := info.env
		if strings.EqualFold(key, "subject") {
			return strings.Contains(strings.ToLower(env.Subject), want)
		}
		addrs := map[string][]imap.Address{"from": env.From, "to": env.To, "cc": env.Cc, "bcc": env.Bcc}[strings.ToLower(key)]
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
		if value == "" {
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
		sm.hdr = &gomessage.Header{Header: parseHeader(raw)}
		sm.hdrText = strings.ToLower(decodeHeaderText(raw))
	}
	return sm.hdr
}

// decodeHeaderText decodes RFC 2047 encoded words in a raw header block.
func decodeHeaderText(raw []byte) string {
	h := gomessage.Header{Header: parseHeader(raw)}
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
	return b.String()
}

// matchBody implements BODY (withHeader false) and TEXT.
func (sm *searchMsg) matchBody(value string, withHeader bool) bool {
	want := strings.ToLower(value)
	if withHeader {
		if sm.loadHeader() == nil {
			return false
		}
		if strings.Contains(sm.hdrText, want) {
			return true
		}
	}
	if sm.loaded&4 == 0 {
		sm.loaded |= 4
		sm.texts = sm.readTexts()
	}
	for _, t := range sm.texts {
		if strings.Contains(t, want) {
			return true
		}
	}
	return false
}

// readTexts returns the decoded, lower-cased text of every text part.
func (sm *searchMsg) readTexts() []string {
	if !sm.exists {
		return nil
	}
	r, err := sm.s.sel.st.mbox.OpenMessage(sm.s.ctx, sm.m.UID)
	if err != nil {
		return nil
	}
	defer r.Close()
	e, err := gomessage.Read(r)
	if e == nil {
		return nil
	}
	var texts []string
	_ = e.Walk(func(_ []int, part *gomessage.Entity, err error) error {
		if err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if mt != "" && !strings.HasPrefix(mt, "text/") {
			return nil
		}
		b, _ := io.ReadAll(io.LimitReader(part.Body, maxSearchPart))
		texts = append(texts, strings.ToLower(string(b)))
		return nil
	})
	return texts
}

func seqContains(set imap.SeqSet, seq, n uint32) bool {
	for _, r := range set {
		if lo, hi := span(r.Start, r.Stop, n); lo <= seq && seq <= hi {
			return true
		}
	}
	return false
}

func uidContains(set imap.UIDSet, uid imap.UID, view *backend.Snapshot) bool {
	var last imap.UID
	if n := len(view.Messages); n > 0 {
		last = imap.UID(view.Messages[n-1].UID)
	}
	for _, r := range set {
		if lo, hi := span(r.Start, r.Stop, last); lo <= uid && uid <= hi {
			return true
		}
	}
	return false
}
