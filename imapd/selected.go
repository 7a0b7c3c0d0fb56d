package imapd

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/roost-mail/roost/backend"
)

// selected is a session's view of its selected mailbox. view is the
// snapshot whose message order the client knows: sequence number n is
// view.Messages[n-1]. Snapshots are immutable and shared, so a view costs
// nothing until the client is told about changes.
type selected struct {
	st       *mailboxState
	name     string // client's name
	readOnly bool
	view     *backend.Snapshot
	// told holds flags sent to the client since view was taken, so that
	// they are not sent again.
	told      map[backend.UID]flagState
	recent    map[backend.UID]bool // \Recent claimed by this session
	keywords  []string             // keywords announced in FLAGS
	searchRes []backend.UID        // saved SEARCH result (RFC 5182)
}

type flagState struct {
	flags    backend.Flags
	keywords []string
}

func (s *session) Select(name string, opts *imap.SelectOptions) (*imap.SelectData, error) {
	defer s.timed("SELECT")()
	s.unselect()
	sname, err := s.srv.toStore(name)
	if err != nil {
		return nil, err
	}
	st, err := s.srv.openMailbox(s.ctx, s.ur, sname)
	if err != nil {
		return nil, s.fail("open mailbox", err)
	}
	snap, err := st.sync(s.ctx)
	if err != nil {
		s.srv.releaseMailbox(st)
		return nil, s.fail("read mailbox", err)
	}
	sel := &selected{st: st, name: name, readOnly: opts.ReadOnly, view: snap, recent: map[backend.UID]bool{}}
	if !sel.readOnly {
		for _, uid := range st.claimRecent(snap) {
			sel.recent[uid] = true
		}
	}
	sel.keywords = keywordsOf(snap)
	s.sel = sel

	data := &imap.SelectData{
		Flags:       mailboxFlags(sel.keywords),
		NumMessages: uint32(snap.Len()),
		NumRecent:   uint32(len(sel.recent)),
		UIDNext:     imap.UID(snap.UIDNext),
		UIDValidity: snap.UIDValidity,
	}
	if !sel.readOnly {
		data.PermanentFlags = append(mailboxFlags(sel.keywords), imap.FlagWildcard)
	} else {
		data.PermanentFlags = []imap.Flag{}
	}
	// From the summary: a mailbox just opened from the store's cache
	// answers before its message list is decoded.
	data.FirstUnseenSeqNum = uint32(snap.Summary().FirstUnseen + 1)
	return data, nil
}

func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel != nil {
		s.srv.releaseMailbox(s.sel.st)
		s.sel = nil
	}
}

// Poll runs after every command: it tells the client what changed.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	s.cc.commandSeen()
	if s.sel == nil {
		return nil
	}
	cur, err := s.sel.st.sync(s.ctx)
	if err != nil {
		return s.fail("check mailbox", err)
	}
	return s.update(w, cur, allowExpunge)
}

// Idle reports changes as they happen until stop is closed. The store
// closes Snapshot.Changed when any process changes the mailbox; a session
// of this process that changes it replaces the shared snapshot. A check
// every RescanInterval (shared by all sessions of the mailbox, see sync)
// covers late or lost notifications.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	timeout := time.NewTimer(s.srv.opts.IdleTimeout)
	defer timeout.Stop()
	rescan := time.NewTicker(s.srv.opts.RescanInterval)
	defer rescan.Stop()
	for {
		changed, updated, err := s.idlePoll(w)
		if err != nil || changed == nil && updated == nil && s.isClosed() {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		case <-changed:
		case <-updated:
		case <-rescan.C:
			if err := s.idleRescan(); err != nil {
				return err
			}
		case <-timeout.C:
			return s.conn.Bye("IDLE lasted too long, reconnect")
		}
	}
}

// idlePoll reports changes and returns what to wait on next. go-imap may
// close the session while IDLE's goroutine still runs, hence the lock.
func (s *session) idlePoll(w *imapserver.UpdateWriter) (changed, updated <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.sel == nil {
		return nil, nil, nil
	}
	if err := s.Poll(w, true); err != nil {
		return nil, nil, err
	}
	snap, updated := s.sel.st.current()
	return snap.Changed, updated, nil
}

func (s *session) idleRescan() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.sel == nil {
		return nil
	}
	if _, err := s.sel.st.sync(s.ctx); err != nil {
		return s.fail("check mailbox", err)
	}
	return nil
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// update brings the client's view up to cur. Without allowExpunge (during
// FETCH, STORE and SEARCH, RFC 3501 7.4.1) it reports only flag changes
// while messages have gone, since EXISTS without the EXPUNGEs would
// renumber messages behind the client's back.
func (s *session) update(w *imapserver.UpdateWriter, cur *backend.Snapshot, allowExpunge bool) error {
	sel := s.sel
	old := sel.view
	if old == cur && len(sel.told) == 0 {
		return nil
	}
	if cur.UIDValidity != old.UIDValidity {
		// The store had to renumber (its UID list was lost or damaged
		// beyond repair). UIDs must not change within a session (RFC 3501
		// 2.3.1.1), so end it: the client reconnects and resynchronises.
		s.log.Warn("UIDVALIDITY changed under a selected mailbox; disconnecting the client",
			"mailbox", sel.st.mbox.Name(), "old", old.UIDValidity, "new", cur.UIDValidity)
		s.conn.Bye("Mailbox UIDVALIDITY changed, reconnect to resynchronise")
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Mailbox UIDVALIDITY changed"}
	}
	var removed []int // indexes in old
	type change struct {
		oldIdx, curIdx int
	}
	var changes []change
	i, j := 0, 0
	for i < len(old.Messages()) {
		om := &old.Messages()[i]
		for j < len(cur.Messages()) && cur.Messages()[j].UID < om.UID {
			j++
		}
		if j < len(cur.Messages()) && cur.Messages()[j].UID == om.UID {
			if s.flagsDiffer(om, &cur.Messages()[j]) {
				changes = append(changes, change{i, j})
			}
			j++
		} else {
			removed = append(removed, i)
		}
		i++
	}
	if len(removed) > 0 && !allowExpunge {
		for _, c := range changes {
			m := &cur.Messages()[c.curIdx]
			if err := w.WriteMessageFlags(uint32(c.oldIdx+1), imap.UID(m.UID), s.flagsOf(m)); err != nil {
				return err
			}
			s.tell(m)
		}
		return nil
	}
	for k := len(removed) - 1; k >= 0; k-- {
		if err := w.WriteExpunge(uint32(removed[k] + 1)); err != nil {
			return err
		}
	}
	if kws := keywordsOf(cur); !slices.Equal(kws, sel.keywords) {
		sel.keywords = kws
		if err := w.WriteMailboxFlags(mailboxFlags(kws)); err != nil {
			return err
		}
	}
	if len(cur.Messages()) != len(old.Messages())-len(removed) {
		if !sel.readOnly {
			for _, uid := range sel.st.claimRecent(cur) {
				sel.recent[uid] = true
			}
		}
		if err := w.WriteNumMessages(uint32(len(cur.Messages()))); err != nil {
			return err
		}
		if err := w.WriteNumRecent(uint32(len(sel.recent))); err != nil {
			return err
		}
	}
	for _, c := range changes {
		m := &cur.Messages()[c.curIdx]
		if err := w.WriteMessageFlags(uint32(c.curIdx+1), imap.UID(m.UID), s.flagsOf(m)); err != nil {
			return err
		}
	}
	for _, k := range removed {
		delete(sel.recent, old.Messages()[k].UID)
	}
	sel.view, sel.told = cur, nil
	return nil
}

// flagsDiffer compares a message's current flags with what the client was
// last told.
func (s *session) flagsDiffer(old, cur *backend.Message) bool {
	f, kw := old.Flags, old.Keywords
	if t, ok := s.sel.told[old.UID]; ok {
		f, kw = t.flags, t.keywords
	}
	return f != cur.Flags || !slices.Equal(kw, cur.Keywords)
}

// tell records that the client now knows m's flags.
func (s *session) tell(m *backend.Message) {
	if s.sel.told == nil {
		s.sel.told = make(map[backend.UID]flagState)
	}
	s.sel.told[m.UID] = flagState{m.Flags, m.Keywords}
}

// systemFlags holds the IMAP form of every combination of system flags,
// so that FETCH FLAGS of a large mailbox does not build them per message.
var systemFlags = func() (all [32][]imap.Flag) {
	for f := range all {
		for _, n := range backend.Flags(f).Names() {
			all[f] = append(all[f], imap.Flag(n))
		}
	}
	return all
}()

// flagsOf returns the IMAP flags of m as this session sees them. The result
// may be shared and must not be modified.
func (s *session) flagsOf(m *backend.Message) []imap.Flag {
	sys := systemFlags[m.Flags&31]
	recent := s.sel != nil && s.sel.recent[m.UID]
	if len(m.Keywords) == 0 && !recent {
		return sys
	}
	flags := make([]imap.Flag, 0, len(sys)+len(m.Keywords)+1)
	flags = append(flags, sys...)
	for _, k := range m.Keywords {
		flags = append(flags, imap.Flag(k))
	}
	if recent {
		flags = append(flags, imap.Flag(`\Recent`))
	}
	return flags
}

// keywordsOf lists the keywords used in snap, sorted case-insensitively,
// plus the common $-keywords clients look for in FLAGS.
func keywordsOf(snap *backend.Snapshot) []string {
	kws := []string{"$Forwarded", "$Junk", "$MDNSent", "$NotJunk"}
	for _, k := range snap.Summary().Keywords {
		if !slices.ContainsFunc(kws, func(s string) bool { return strings.EqualFold(s, k) }) {
			kws = append(kws, k)
		}
	}
	sort.Slice(kws, func(i, j int) bool { return strings.ToLower(kws[i]) < strings.ToLower(kws[j]) })
	return kws
}

func mailboxFlags(keywords []string) []imap.Flag {
	flags := []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}
	for _, k := range keywords {
		flags = append(flags, imap.Flag(k))
	}
	return flags
}

// resolve returns the indexes into the view of the messages numSet names,
// ascending and without duplicates. Sequence numbers beyond the mailbox
// are a client error (as in Dovecot); UIDs that do not exist are skipped.
func (s *session) resolve(numSet imap.NumSet) ([]int, error) {
	v := s.sel.view.Messages()
	var idx []int
	switch set := numSet.(type) {
	case imap.SeqSet:
		n := uint32(len(v))
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, n)
			if (r.Start != 0 && r.Start > n) || (r.Stop != 0 && r.Stop > n) || lo == 0 {
				if r.Start == 0 || r.Stop == 0 {
					continue // "*" in an empty mailbox names nothing
				}
				return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
					Text: "Invalid message sequence number (the mailbox has fewer messages)"}
			}
			for k := lo; k <= hi; k++ {
				idx = append(idx, int(k-1))
			}
		}
	case imap.UIDSet:
		if imap.IsSearchRes(set) {
			for _, uid := range s.sel.searchRes {
				if k := s.sel.view.Find(uid); k >= 0 {
					idx = append(idx, k)
				}
			}
			break
		}
		var maxUID imap.UID
		if len(v) > 0 {
			maxUID = imap.UID(v[len(v)-1].UID)
		}
		for _, r := range set {
			lo, hi := span(r.Start, r.Stop, maxUID)
			k := sort.Search(len(v), func(i int) bool { return imap.UID(v[i].UID) >= lo })
			for ; k < len(v) && imap.UID(v[k].UID) <= hi; k++ {
				idx = append(idx, k)
			}
		}
	}
	if !strictlyAscending(idx) {
		sort.Ints(idx)
		idx = slices.Compact(idx)
	}
	return idx, nil
}

// span turns a range of a sequence or UID set into lo <= hi, with "*"
// (encoded as 0) standing for last (RFC 9051 9, seq-range).
func span[T ~uint32](start, stop, last T) (lo, hi T) {
	if start == 0 {
		start = last
	}
	if stop == 0 {
		stop = last
	}
	return min(start, stop), max(start, stop)
}

func strictlyAscending(idx []int) bool {
	for i := 1; i < len(idx); i++ {
		if idx[i] <= idx[i-1] {
			return false
		}
	}
	return true
}
