package maildir

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
)

// pickUpNew handles the everyday change cheaply: files added to new/ (by
// Postfix, lmtpd, another session) while cur/ stayed as it was. It lists
// new/ alone, matches only the names found there and appends the new ones,
// so a delivery into a big mailbox costs in proportion to new/, not to the
// whole mailbox. Anything else — a file gone from new/, a record without
// its file, a name also in cur/, a date to look up for an old record —
// returns false, and the caller lists and matches everything. Caller holds
// st.mu.
func (st *mboxState) pickUpNew(ctx context.Context) (bool, error) {
	newDir, curDir := filepath.Join(st.dir, "new"), filepath.Join(st.dir, "cur")
	if st.snap == nil || !st.loaded || st.mustWrite || len(st.snap.Messages()) != len(st.msgs) ||
		statID(curDir) != st.curID || !(st.watched.Load() || st.curSettled) {
		return false, nil
	}
	ch, ok := st.startNewScan()
	if !ok {
		return false, nil
	}
	nb := statID(newDir)
	names, err := readNames(newDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if statID(newDir) != nb || statID(curDir) != st.curID {
		return false, nil // moving under us: the full scan retries
	}
	// Records another process appended meanwhile are read; anything more
	// (a rewritten list, new keywords) needs the full scan.
	ulPath := filepath.Join(st.dir, uidlistName)
	if id := statID(ulPath); id != st.ulID && !st.readTail(ulPath, id) ||
		statID(filepath.Join(st.dir, keywordsName)) != st.kwID {
		return false, nil
	}
	res, ok := st.matchNew(names)
	if !ok {
		return false, nil
	}
	prev := len(st.snap.Messages())
	if len(res.unknown) == 0 {
		st.newID = nb
		n := len(st.msgs)
		st.publish(st.msgs[:n:n], n != prev, ch)
		return true, nil
	}
	ul := st.ulID
	lk, err := st.lockUidlist(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if err := lk.release(); err != nil {
			st.s.log.Error("release uidlist lock", "dir", st.dir, "err", err)
		}
	}()
	if statID(filepath.Join(st.dir, uidlistName)) != ul || statID(newDir) != nb || statID(curDir) != st.curID {
		// Another writer numbered files while we waited: look at
		// everything again, under the lock we hold.
		return true, st.rescan(ctx, lk)
	}
	next := st.nextUID
	st.assign(&res)
	// Appended in place, past what any published snapshot shows.
	all := append(st.msgs, res.added...)
	if err := st.writeUidlist(all, len(st.msgs)); err != nil {
		st.nextUID = next
		return false, err
	}
	st.msgs = all
	st.locs = append(st.locs, res.addLocs...)
	idx := st.keyIndex()
	for _, m := range res.added {
		idx[m.Key] = m.UID
	}
	st.newID = nb
	n := len(st.msgs)
	st.publish(st.msgs[:n:n], true, ch)
	return true, nil
}

// matchNew matches a listing of new/ with the messages known to be there
// or not yet seen anywhere (records another process just appended). It
// records where those are now and returns the unknown names; ok is false
// when the listing shows a change only a full scan can sort out.
func (st *mboxState) matchNew(names []string) (res matchResult, ok bool) {
	var pending []int // messages that must be in new/ now
	for i, lc := range st.locs {
		if lc.inNew || !lc.known {
			pending = append(pending, i)
		}
	}
	found := make(map[int]loc, len(pending))
	byKey := st.keyIndex()
	for _, name := range names {
		if !validFileName(name) {
			continue
		}
		key, info := splitName(name)
		uid, known := byKey[key]
		if !known {
			res.unknown = append(res.unknown, "new/"+name)
			continue
		}
		i := st.find(uid)
		if i < 0 {
			return res, false
		}
		if _, dup := found[i]; dup || st.locs[i].known && !st.locs[i].inNew {
			return res, false // the same base name twice
		}
		m := st.msgs[i]
		fl, kw := parseInfo(info)
		if m.InternalDate.IsZero() || fl != m.Flags || !slices.Equal(st.keywords(kw), m.Keywords) {
			// A date to look up, or flags set on a file in
			// new/: published messages cannot change in place.
			return res, false
		}
		found[i] = loc{info: st.s.intern(info), inNew: true, known: true}
	}
	if len(found) != len(pending) {
		return res, false // a file left new/ (expunged, or moved to cur/ unseen)
	}
	for i, lc := range found {
		st.locs[i] = lc
	}
	return res, true
}
