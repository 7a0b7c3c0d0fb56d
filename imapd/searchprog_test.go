package imapd

import (
	"bytes"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/backend"
)

// FuzzRanges checks the sorted, merged form of a sequence or UID set
// against the set as the client sent it: the same numbers are members.
func FuzzRanges(f *testing.F) {
	f.Add([]byte{1, 3, 7, 5, 2, 2})
	f.Add([]byte{0, 255, 4, 4, 5, 5, 250, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var rs []numRange
		for i := 0; i+1 < len(b) && len(rs) < 64; i += 2 {
			rs = append(rs, numRange{min(uint32(b[i]), uint32(b[i+1])), max(uint32(b[i]), uint32(b[i+1]))})
		}
		orig := append([]numRange(nil), rs...)
		norm := normRanges(rs)
		for i := 1; i < len(norm); i++ {
			if norm[i].lo <= norm[i-1].hi+1 {
				t.Fatalf("not merged: %v", norm)
			}
		}
		for x := uint32(0); x < 260; x++ {
			want := false
			for _, r := range orig {
				if r.lo <= x && x <= r.hi {
					want = true
				}
			}
			if got := inRanges(norm, x); got != want {
				t.Fatalf("%d in %v: got %v, want %v (normalised %v)", x, orig, got, want, norm)
			}
		}
	})
}

// FuzzSearchProgram builds SEARCH programs from the fuzzer's bytes (sets
// with "*" and "$", flags, sizes, dates, NOT and OR nested at random) and
// checks the prepared program against a direct reading of RFC 9051 on a
// small mailbox, message by message; programs past the limits must be
// refused, and only those.
func FuzzSearchProgram(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 7, 8, 4, 5})
	f.Add([]byte{8, 7, 0, 3, 5, 9, 1, 0, 2, 4, 6})
	f.Add(bytes.Repeat([]byte{7}, 40))
	f.Add(bytes.Repeat([]byte{7}, 80)) // NOT nested 40 deep: refused
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var msgs []backend.Message
	for i, uid := range []backend.UID{2, 3, 5, 8, 13, 14, 15, 21, 30, 34, 39, 40} {
		msgs = append(msgs, backend.Message{UID: uid, Flags: backend.Flags(i % 32),
			Size: int64(100 * (i + 1)), InternalDate: day.AddDate(0, 0, i)})
	}
	view := backend.NewSnapshot(1, 41, msgs, nil)
	s := &session{sel: &selected{view: view, recent: map[backend.UID]bool{3: true, 21: true},
		searchRes: []backend.UID{5, 13, 14, 40}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &critGen{b: b}
		c := g.criteria(0)
		p, _, err := s.compileSearch(c)
		tooBig := g.maxDepth > maxSearchDepth || g.keys > maxSearchKeys
		if err != nil != tooBig {
			t.Fatalf("compile error %v for depth %d and %d keys", err, g.maxDepth, g.keys)
		}
		if err != nil {
			return
		}
		for k := range view.Messages() {
			sm := &searchMsg{s: s, m: &view.Messages()[k], seq: uint32(k + 1), exists: true}
			if got, want := sm.match(p), refMatch(s, c, k); got != want {
				t.Fatalf("message %d (UID %d): match %v, want %v for %+v", k+1, view.Messages()[k].UID, got, want, c)
			}
		}
	})
}

// critGen turns bytes into search criteria, counting keys and depth as
// the compiler should.
type critGen struct {
	b              []byte
	keys, maxDepth int
}

func (g *critGen) next() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *critGen) criteria(depth int) *imap.SearchCriteria {
	g.maxDepth = max(g.maxDepth, depth)
	c := &imap.SearchCriteria{}
	for n := int(g.next()%4) + 1; n > 0 && len(g.b) > 0; n-- {
		op := g.next()
		switch op % 10 {
		case 0:
			var set imap.SeqSet
			for r := int(g.next()%3) + 1; r > 0; r-- {
				set = append(set, imap.SeqRange{Start: uint32(g.next() % 16), Stop: uint32(g.next() % 16)})
			}
			c.SeqNum = append(c.SeqNum, set)
		case 1:
			var set imap.UIDSet
			for r := int(g.next()%3) + 1; r > 0; r-- {
				set = append(set, imap.UIDRange{Start: imap.UID(g.next() % 45), Stop: imap.UID(g.next() % 45)})
			}
			c.UID = append(c.UID, set)
		case 2:
			c.UID = append(c.UID, imap.SearchRes())
		case 3, 4:
			fl := []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft, `\Recent`, "$Junk"}[g.next()%7]
			if op%10 == 3 {
				c.Flag = append(c.Flag, fl)
			} else {
				c.NotFlag = append(c.NotFlag, fl)
			}
		case 5:
			c.Larger = int64(g.next()) * 10
			continue
		case 6:
			c.Smaller = int64(g.next()) * 10
			continue
		case 7:
			c.Not = append(c.Not, *g.criteria(depth + 1))
		case 8:
			c.Or = append(c.Or, [2]imap.SearchCriteria{*g.criteria(depth + 1), *g.criteria(depth + 1)})
		case 9:
			d := time.Date(2026, 3, 1+int(g.next()%15), 0, 0, 0, 0, time.UTC)
			if g.next()%2 == 0 {
				c.Since = d
			} else {
				c.Before = d
			}
			continue
		}
		g.keys++
	}
	return c
}

// refMatch is RFC 9051 6.4.4 read directly: every key must hold.
func refMatch(s *session, c *imap.SearchCriteria, k int) bool {
	v := s.sel.view.Messages()
	m := &v[k]
	seq, n, last := uint32(k+1), uint32(len(v)), v[len(v)-1].UID
	for _, set := range c.SeqNum {
		in := false
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, n)
			in = in || lo <= seq && seq <= hi
		}
		if !in {
			return false
		}
	}
	for _, set := range c.UID {
		in := false
		if imap.IsSearchRes(set) {
			for _, u := range s.sel.searchRes {
				in = in || u == m.UID
			}
		}
		for _, r := range set {
			if imap.IsSearchRes(set) {
				break
			}
			lo, hi := span(uint32(r.Start), uint32(r.Stop), uint32(last))
			in = in || lo <= uint32(m.UID) && uint32(m.UID) <= hi
		}
		if !in {
			return false
		}
	}
	has := func(f imap.Flag) bool {
		if f == `\Recent` {
			return s.sel.recent[m.UID]
		}
		if bf, ok := backend.ParseFlag(string(f)); ok {
			return m.Flags&bf != 0
		}
		return m.HasKeyword(string(f))
	}
	for _, f := range c.Flag {
		if !has(f) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if has(f) {
			return false
		}
	}
	if c.Larger > 0 && m.Size <= c.Larger || c.Smaller > 0 && m.Size >= c.Smaller {
		return false
	}
	if !c.Since.IsZero() && m.InternalDate.Before(c.Since) || !c.Before.IsZero() && !m.InternalDate.Before(c.Before) {
		return false
	}
	for i := range c.Not {
		if refMatch(s, &c.Not[i], k) {
			return false
		}
	}
	for i := range c.Or {
		if !refMatch(s, &c.Or[i][0], k) && !refMatch(s, &c.Or[i][1], k) {
			return false
		}
	}
	return true
}
