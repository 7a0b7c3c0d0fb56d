package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/roost-mail/roost/backend"
)

func (st *mboxState) uidValidityNow() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.uidValidity
}

// ensureLoaded makes st.msgs reflect the uidlist on disk. Caller holds
// st.mu and, if locked, the uidlist lock.
func (st *mboxState) ensureLoaded(locked bool) error {
	before := st.ulID
	wasLoaded := st.loaded
	if err := st.loadState(locked); err != nil {
		return err
	}
	if !wasLoaded || st.ulID != before {
		st.snap = nil // memory moved on without a listing: rescan on Sync
	}
	return nil
}

// keywordBits maps keyword names to letters, adding new ones to
// dovecot-keywords. Caller holds st.mu and the uidlist lock.
func (st *mboxState) keywordBits(names []string) (uint32, error) {
	var bits uint32
	added := false
	for _, k := range names {
		i := st.kw.index(k)
		if i < 0 {
			for j := range st.kw {
				if st.kw[j] == "" {
					i = j
					break
				}
			}
			if i < 0 {
				return 0, fmt.Errorf("mailbox %s already uses 26 keywords, the Maildir limit; cannot add %q", st.dir, k)
			}
			st.kw[i] = k
			added = true
		}
		bits |= 1 << i
	}
	if added {
		p := filepath.Join(st.dir, keywordsName)
		if err := writeAtomic(p, st.kw.marshal(), st.s.opts.Fsync, st.own, st.s.names); err != nil {
			st.kwID = fileID{} // reread
			return 0, err
		}
		st.kwID = statID(p)
		st.kwCache = map[uint32][]string{}
	}
	return bits, nil
}

// deliver moves prepared files into new/ (no flags) or cur/ and gives them
// UIDs. On failure nothing stays visible.
func (st *mboxState) deliver(ctx context.Context, ps []pending) ([]backend.Message, error) {
	return st.place(ctx, ps, nil)
}

// placed is a file put into new/ or cur/; from is where a moved
// file came from (undo renames it back there), "" for a file from tmp/.
type placed struct{ path, from string }

// place does deliver's work. With srcs (parallel to ps) each message is
// instead moved: its file in another mailbox (or this one) is renamed
// straight into place, and the rename is the claim: of two sessions moving
// one message, only one can succeed. A message whose file is gone (moved
// or expunged by someone else) is left out: its result has UID 0. On
// failure tmp/ files are removed and moved files renamed back, never
// removed (they are the only copy).
func (st *mboxState) place(ctx context.Context, ps []pending, srcs []*moveSrc) ([]backend.Message, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	removeTmp := func() {
		if srcs == nil {
			for _, p := range ps {
				os.Remove(p.tmp)
			}
		}
	}
	trusted := st.inSync()
	lk, err := st.lockUidlist(ctx)
	if err != nil {
		removeTmp()
		return nil, err
	}
	defer func() {
		if err := lk.release(); err != nil {
			st.s.log.Error("release uidlist lock", "dir", st.dir, "err", err)
		}
	}()
	if err := st.ensureLoaded(true); err != nil {
		removeTmp()
		return nil, err
	}
	res := make([]backend.Message, len(ps))
	out := make([]backend.Message, 0, len(ps))
	locs := make([]loc, 0, len(ps))
	var done []placed
	next := st.nextUID
	fail := func(err error) ([]backend.Message, error) {
		st.undo(done)
		removeTmp()
		st.nextUID = next
		return nil, err
	}
	srcDirs := map[string]bool{}
	for i := range ps {
		var src *moveSrc
		if srcs != nil {
			src = srcs[i]
		}
		p, key, lc, dst, err := st.placeOne(ps[i], src)
		if errors.Is(err, errGone) {
			continue
		}
		if err != nil {
			return fail(err)
		}
		f := placed{path: dst}
		if src != nil {
			f.from = src.path
			srcDirs[filepath.Dir(src.path)] = true
		}
		done = append(done, f)
		m := backend.Message{UID: backend.UID(st.nextUID), Key: key, Flags: p.flags,
			Keywords: st.keywords(lc.kw), InternalDate: p.date, Size: p.size}
		res[i] = m
		out = append(out, m)
		locs = append(locs, lc.loc)
		st.nextUID++
	}
	if len(out) == 0 {
		return res, nil
	}
	if st.s.opts.Fsync {
		// The sources' directories too: after a crash a moved file must
		// not be back in its old place as well as in the new one.
		srcDirs[filepath.Join(st.dir, "new")] = true
		srcDirs[filepath.Join(st.dir, "cur")] = true
		for d := range srcDirs {
			if err := syncDir(d); err != nil {
				return fail(err)
			}
		}
	}
	// Appended in place: published snapshots are capped at their length,
	// so the elements past it are this writer's alone (no 100k copy).
	all := append(st.msgs, out...)
	if err := st.writeUidlist(all, len(st.msgs)); err != nil {
		return fail(err)
	}
	st.msgs = all
	st.locs = append(st.locs, locs...)
	idx := st.keyIndex()
	for _, m := range out {
		idx[m.Key] = m.UID
	}
	st.ownChange(trusted)
	return res, nil
}

// maxRelocations bounds how often a move follows a file that other
// sessions keep renaming (flag changes) before it gives up.
const maxRelocations = 20

// placedLoc is a placed file's loc with its keyword letters.
type placedLoc struct {
	loc
	kw uint32
}

// placeOne renames one file into new/ or cur/ under a name that is free,
// returning the pending as placed (a moved file's flags may have changed
// meanwhile). Caller holds st.mu and the uidlist lock.
func (st *mboxState) placeOne(p pending, src *moveSrc) (pending, string, placedLoc, string, error) {
	key := p.key
	relocations := 0
	for attempt := 0; ; attempt++ {
		kw, err := st.keywordBits(p.keywords)
		if err != nil {
			return p, "", placedLoc{}, "", err
		}
		lc := placedLoc{loc: loc{inNew: p.flags == 0 && kw == 0 && p.info == "", known: true}, kw: kw}
		if !lc.inNew {
			lc.info = st.s.intern(makeInfo(p.info, p.flags, kw))
		}
		dst := st.filePath(key, lc.loc)
		st.s.expect(st, dst)
		if src == nil {
			err = renameNoReplace(p.tmp, dst)
		} else {
			// Registered one by one, just before each rename: inotify
			// consumes them as it goes, keeping the table small.
			st.s.expect(src.box, src.path)
			err = moveNoReplace(src.path, dst)
		}
		switch {
		case err == nil:
			return p, key, lc, dst, nil
		case errors.Is(err, fs.ErrExist) && attempt < 4:
			// Name taken (a clock step back, another host): pick another.
			key = st.s.names.next() + fmt.Sprintf(",S=%d,W=%d", p.phys, p.size)
			continue
		case src != nil && errors.Is(err, fs.ErrNotExist) && relocations < maxRelocations:
			if _, derr := os.Stat(filepath.Dir(dst)); derr != nil {
				break // the destination's new/ or cur/ is gone
			}
			// Renamed by a flag change elsewhere (perhaps back to the same
			// name by now), or moved or expunged.
			relocations++
			gone, rerr := src.relocate(&p)
			if gone {
				return p, "", placedLoc{}, "", errGone
			}
			if rerr == nil {
				continue
			}
			err = rerr
		}
		return p, "", placedLoc{}, "", fmt.Errorf("move message into place: %w", err)
	}
}

// undo takes placed files out of new/ and cur/ again: files from tmp/ are
// removed, moved files renamed back to where they were. A moved file that
// cannot go back stays here and gets a UID at the next sync: not lost.
func (st *mboxState) undo(done []placed) {
	for _, f := range done {
		if f.from == "" {
			os.Remove(f.path)
			continue
		}
		if err := moveNoReplace(f.path, f.from); err != nil {
			st.s.log.Error("a moved message could not be put back after a failed move; it stays in the destination and gets a UID there at the next sync",
				"file", f.path, "source", f.from, "err", err)
		}
	}
}

func (mb *mailbox) SetFlags(ctx context.Context, uids []backend.UID, op backend.FlagOp, flags backend.Flags, keywords []string) ([]backend.Message, error) {
	for _, k := range keywords {
		if !validKeyword(k) {
			return nil, fmt.Errorf("maildir: keyword %q is not a valid IMAP atom", k)
		}
	}
	flags &= allFlags
	st := mb.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var kwBits uint32
	if len(keywords) > 0 {
		known := true
		for _, k := range keywords {
			if st.kw.index(k) < 0 {
				known = false
			}
		}
		if !known && op != backend.FlagsRemove {
			lk, err := st.lockUidlist(ctx)
			if err != nil {
				return nil, err
			}
			if err = st.ensureLoaded(true); err == nil {
				kwBits, err = st.keywordBits(keywords)
			}
			if rerr := lk.release(); err == nil && rerr != nil {
				st.s.log.Error("release uidlist lock", "dir", st.dir, "err", rerr)
			}
			if err != nil {
				return nil, fmt.Errorf("maildir: set keywords in %s: %w", mb.name, err)
			}
		} else {
			for _, k := range keywords {
				if i := st.kw.index(k); i >= 0 {
					kwBits |= 1 << i
				}
			}
		}
	}
	trusted := st.inSync()
	msgs := append([]backend.Message(nil), st.msgs...)
	locs := append([]loc(nil), st.locs...)
	changed := false
	var out []backend.Message
	for _, uid := range uids {
		i := st.find(uid)
		if i < 0 {
			continue
		}
		for attempt := 0; ; attempt++ {
			old := locs[i]
			of, ok := parseInfo(old.info)
			nf, nk := of, ok
			switch op {
			case backend.FlagsAdd:
				nf, nk = of|flags, ok|kwBits
			case backend.FlagsRemove:
				nf, nk = of&^flags, ok&^kwBits
			case backend.FlagsReplace:
				nf, nk = flags, kwBits
			}
			if nf == of && nk == ok || !old.known {
				break
			}
			nl := loc{info: st.s.intern(makeInfo(old.info, nf, nk)), known: true}
			from, to := st.filePath(msgs[i].Key, old), st.filePath(msgs[i].Key, nl)
			st.s.expect(st, from, to)
			err := renameNoReplace(from, to)
			if err == nil {
				locs[i] = nl
				msgs[i].Flags, msgs[i].Keywords = nf, st.keywords(nk)
				changed = true
				break
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("maildir: set flags of UID %d in %s: %w", uid, mb.name, err)
			}
			if attempt > 0 {
				// Still gone after a rescan (one that could not get a
				// stable listing while others kept moving files): moved
				// or expunged meanwhile, skipped as a vanished UID.
				i = -1
				break
			}
			// Moved by another process: look again, then retry once.
			trusted = false
			if err := st.rescan(ctx, nil); err != nil {
				return nil, err
			}
			msgs = append([]backend.Message(nil), st.msgs...)
			locs = append([]loc(nil), st.locs...)
			if i = st.find(uid); i < 0 {
				break
			}
		}
		if i >= 0 && st.find(uid) >= 0 {
			out = append(out, msgs[i])
		}
	}
	if changed {
		st.msgs, st.locs = msgs, locs
		st.ownChange(trusted)
	}
	return out, nil
}
