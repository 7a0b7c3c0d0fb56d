package imapd

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/backend"
)

// Limits of one SEARCH program, so that no client can make a search cost
// more than a bounded multiple of one pass over the mailbox. Each key is
// evaluated per message, so the cost of a search is about keys × messages;
// BODY and TEXT keys scan every message's text, hence their own, smaller
// bound. Real clients send a handful of keys (Thunderbird's "subject or
// body contains" is OR SUBJECT x BODY x) and nest NOT/OR a few levels.
const (
	maxSearchDepth    = 32   // nesting of NOT and OR
	maxSearchKeys     = 1000 // keys of any kind, sequence and UID sets included
	maxSearchTextKeys = 50   // BODY and TEXT keys
)

// searchProg is a SEARCH program (imap.SearchCriteria) prepared for one
// pass over the view: strings lower-cased once, sequence and UID sets
// resolved against the view and sorted, so that testing a message costs
// O(log n) per set whatever its size.
type searchProg struct {
	seqs, uids            [][]numRange // the message must be in each
	flags, notFlags       []imap.Flag
	larger, smaller       int64
	since, before         time.Time
	sentSince, sentBefore time.Time
	headers               []headerKey
	bodies, texts         []string // lower-cased
	nots                  []*searchProg
	ors                   [][2]*searchProg
}

// numRange is lo..hi inclusive.
type numRange struct{ lo, hi uint32 }

// headerKey is a HEADER key (FROM, TO, CC, BCC and SUBJECT are HEADER keys
// too), both parts lower-cased.
type headerKey struct{ key, value string }

// searchCompiler builds a searchProg and counts its keys.
type searchCompiler struct {
	n        uint32 // messages in the view: "*" of a sequence set
	lastUID  uint32 // "*" of a UID set
	res      []backend.UID
	keys     int
	textKeys int
	content  bool // some key reads the header or the text
}

// errSearchTooComplex answers a program past the limits (RFC 5530 LIMIT).
var errSearchTooComplex = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
	Text: fmt.Sprintf("Search too complex: at most %d keys, %d of them BODY or TEXT, and NOT/OR nested at most %d deep",
		maxSearchKeys, maxSearchTextKeys, maxSearchDepth)}

// compileSearch prepares criteria for the selected view, or refuses it.
func (s *session) compileSearch(c *imap.SearchCriteria) (*searchProg, bool, error) {
	sc := &searchCompiler{n: uint32(len(s.sel.view.Messages())), res: s.sel.searchRes}
	if sc.n > 0 {
		sc.lastUID = uint32(s.sel.view.Messages()[sc.n-1].UID)
	}
	p, err := sc.compile(c, 0)
	return p, sc.content, err
}

func (sc *searchCompiler) compile(c *imap.SearchCriteria, depth int) (*searchProg, error) {
	if depth > maxSearchDepth {
		return nil, errSearchTooComplex
	}
	sc.keys += len(c.SeqNum) + len(c.UID) + len(c.Flag) + len(c.NotFlag) + len(c.Header) +
		len(c.Body) + len(c.Text) + len(c.Not) + len(c.Or)
	sc.textKeys += len(c.Body) + len(c.Text)
	if sc.keys > maxSearchKeys || sc.textKeys > maxSearchTextKeys {
		return nil, errSearchTooComplex
	}
	p := &searchProg{
		flags: c.Flag, notFlags: c.NotFlag,
		larger: c.Larger, smaller: c.Smaller,
		since: c.Since, before: c.Before, sentSince: c.SentSince, sentBefore: c.SentBefore,
	}
	for _, set := range c.SeqNum {
		var rs []numRange
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, sc.n)
			rs = append(rs, numRange{lo, hi})
		}
		p.seqs = append(p.seqs, normRanges(rs))
	}
	for _, set := range c.UID {
		var rs []numRange
		if imap.IsSearchRes(set) {
			for _, uid := range sc.res {
				rs = append(rs, numRange{uint32(uid), uint32(uid)})
			}
		} else {
			for _, r := range set {
				lo, hi := span(uint32(r.Start), uint32(r.Stop), sc.lastUID)
				rs = append(rs, numRange{lo, hi})
			}
		}
		p.uids = append(p.uids, normRanges(rs))
	}
	for _, h := range c.Header {
		p.headers = append(p.headers, headerKey{strings.ToLower(h.Key), strings.ToLower(h.Value)})
	}
	for _, b := range c.Body {
		p.bodies = append(p.bodies, strings.ToLower(b))
	}
	for _, t := range c.Text {
		p.texts = append(p.texts, strings.ToLower(t))
	}
	if len(p.headers)+len(p.bodies)+len(p.texts) > 0 || !p.sentSince.IsZero() || !p.sentBefore.IsZero() {
		sc.content = true
	}
	for i := range c.Not {
		np, err := sc.compile(&c.Not[i], depth+1)
		if err != nil {
			return nil, err
		}
		p.nots = append(p.nots, np)
	}
	for i := range c.Or {
		a, err := sc.compile(&c.Or[i][0], depth+1)
		if err != nil {
			return nil, err
		}
		b, err := sc.compile(&c.Or[i][1], depth+1)
		if err != nil {
			return nil, err
		}
		p.ors = append(p.ors, [2]*searchProg{a, b})
	}
	return p, nil
}

// normRanges sorts rs and merges overlapping and adjacent ranges.
func normRanges(rs []numRange) []numRange {
	slices.SortFunc(rs, func(a, b numRange) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := rs[:0]
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && uint64(r.lo) <= uint64(out[k].hi)+1 {
			out[k].hi = max(out[k].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// inRanges reports whether x is in the normalised ranges rs.
func inRanges(rs []numRange, x uint32) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= x })
	return i < len(rs) && rs[i].lo <= x
}
