package maildir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mail/roost/backend"
)

const (
	missing = iota
	present
	hidden // listed in the uidlist, file not seen in an unstable listing
)

// matchResult is the outcome of comparing a listing with the uidlist.
type matchResult struct {
	state   []uint8           // parallel to st.msgs
	found   []loc             // parallel to st.msgs: where the file is now
	enrich  map[int]time.Time // dates found for records without one
	unknown []string          // "new/" or "cur/" + name
	added   []backend.Message
	addLocs []loc
}

func (st *mboxState) match(l listing) matchResult {
	res := matchResult{state: make([]uint8, len(st.msgs)), found: make([]loc, len(st.msgs))}
	infos := map[string]string{} // local intern cache: no lock per message
	byKey := st.keyIndex()
	for i, name := range l.names {
		if !validFileName(name) {
			continue
		}
		key, info := splitName(name)
		inNew := i < l.nNew
		sub := "cur/"
		if inNew {
			sub = "new/"
		}
		uid, ok := byKey[key]
		idx := -1
		if ok {
			idx = st.find(uid)
		}
		if idx < 0 {
			res.unknown = append(res.unknown, sub+name)
			continue
		}
		if res.state[idx] == present {
			// The same base name twice (new/ and cur/, or two info parts):
			// the second copy gets a new name and UID, nothing is lost.
			res.unknown = append(res.unknown, sub+name)
			continue
		}
		res.state[idx] = present
		in, ok := infos[info]
		if !ok {
			in = st.s.intern(info)
			infos[info] = in
		}
		res.found[idx] = loc{info: in, inNew: inNew, known: true}
	}
	ds := dirStats{dir: st.dir}
	defer ds.close()
	for i := range st.msgs {
		m := &st.msgs[i]
		if res.state[i] != present {
			// Missing from the listing. Trust a stable listing unless the
			// file is still where we last saw it (a readdir race).
			if st.locs[i].known {
				if _, err := os.Lstat(st.path(i)); err == nil {
					res.state[i], res.found[i] = present, st.locs[i]
					continue
				}
			}
			if !l.stable {
				res.state[i], res.found[i] = hidden, st.locs[i]
				if st.locs[i].known {
					res.state[i] = present
				}
			}
			continue
		}
		if m.InternalDate.IsZero() {
			// The list lacks T (Dovecot's): one stat, cached in the
			// uidlist. A missing size is left to the measurer.
			date, err := ds.date(res.found[i].inNew, m.Key+res.found[i].info)
			if err != nil {
				st.s.log.Warn("cannot stat message file", "err", err)
				res.state[i] = hidden
				continue
			}
			if res.enrich == nil {
				res.enrich = map[int]time.Time{}
			}
			res.enrich[i] = date
		}
	}
	return res
}

func (st *mboxState) filePath(key string, lc loc) string {
	sub := "cur"
	if lc.inNew {
		sub = "new"
	}
	return filepath.Join(st.dir, sub, key+lc.info)
}

// assign gives the unknown files the next UIDs, in name order (which is
// delivery order for the usual <seconds>.<...> names). Caller holds the
// uidlist lock.
func (st *mboxState) assign(res *matchResult) {
	sort.Strings(res.unknown)
	files := make([]newFile, 0, len(res.unknown))
	seen := make(map[string]bool, len(res.unknown))
	for _, rel := range res.unknown {
		inNew := rel[:4] == "new/"
		name := rel[4:]
		key, info := splitName(name)
		if _, dup := st.byKey[key]; dup || seen[key] {
			nk, err := st.renameDuplicate(rel[:3], key, info)
			if err != nil {
				st.s.log.Error("duplicate message file name; cannot rename it, leaving it unlisted", "dir", st.dir, "file", rel, "err", err)
				continue
			}
			st.s.log.Warn("duplicate message file name; renamed the copy, which gets a new UID", "dir", st.dir, "file", rel, "new", nk)
			key, name = nk, nk+info
		}
		seen[key] = true
		files = append(files, newFile{name: name, key: key, info: info, inNew: inNew})
	}
	// The date only: a size not in the name (",W=") is measured later, in
	// the background or when a client needs it.
	st.dateFiles(files)
	res.added = slices.Grow(res.added, len(files))
	res.addLocs = slices.Grow(res.addLocs, len(files))
	for _, f := range files {
		if f.date.IsZero() {
			continue // vanished meanwhile (expunged by another process): no UID
		}
		size := int64(-1)
		if w, ok := sizeField(f.key, 'W'); ok {
			size = w
		}
		fl, kw := parseInfo(f.info)
		res.added = append(res.added, backend.Message{
			UID: backend.UID(st.nextUID), Key: f.key, Flags: fl, Keywords: st.keywords(kw),
			InternalDate: f.date, Size: size,
		})
		res.addLocs = append(res.addLocs, loc{info: st.s.intern(f.info), inNew: f.inNew, known: true})
		st.nextUID++
	}
}

// newFile is a file about to get a UID.
type newFile struct {
	name, key, info string
	inNew           bool
	date            time.Time // zero if the file could not be stat'ed
}

// dateFiles stats files for their dates. A first open numbers 100,000
// files: the stats, one system call each, are shared among the cores.
func (st *mboxState) dateFiles(files []newFile) {
	const chunk = 4096
	workers := min(runtime.GOMAXPROCS(0), 4, (len(files)+chunk-1)/chunk)
	var next atomic.Int64
	work := func() {
		ds := dirStats{dir: st.dir}
		defer ds.close()
		for {
			end := int(next.Add(chunk))
			start := end - chunk
			if start >= len(files) {
				return
			}
			for i := start; i < min(end, len(files)); i++ {
				f := &files[i]
				if d, err := ds.date(f.inNew, f.name); err == nil {
					f.date = d
				}
			}
		}
	}
	if workers <= 1 {
		work()
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	wg.Wait()
}

// renameDuplicate gives a file whose base name is already taken a fresh
// base name, keeping its size fields.
func (st *mboxState) renameDuplicate(sub, key, info string) (string, error) {
	nk := st.s.names.next()
	if s, ok := sizeField(key, 'S'); ok {
		nk += fmt.Sprintf(",S=%d", s)
	}
	if w, ok := sizeField(key, 'W'); ok {
		nk += fmt.Sprintf(",W=%d", w)
	}
	d := filepath.Join(st.dir, sub)
	if err := renameNoReplace(filepath.Join(d, key+info), filepath.Join(d, nk+info)); err != nil {
		return "", err
	}
	return nk, nil
}

// build makes the new message list from a match. all includes hidden
// messages (they stay in the uidlist); visible is what the snapshot shows.
func (st *mboxState) build(res *matchResult) (all []backend.Message, locs []loc, visible []backend.Message, changed bool) {
	n := len(st.msgs) + len(res.added)
	all = make([]backend.Message, 0, n)
	locs = make([]loc, 0, n)
	nHidden := 0
	for i, m := range st.msgs {
		switch res.state[i] {
		case missing:
			changed = true
			continue
		case hidden:
			nHidden++
		case present:
			fl, kw := parseInfo(res.found[i].info)
			if fl != m.Flags || res.found[i].info != st.locs[i].info {
				changed = true
			}
			m.Flags, m.Keywords = fl, st.keywords(kw)
		}
		if d, ok := res.enrich[i]; ok {
			m.InternalDate = d
		}
		all = append(all, m)
		locs = append(locs, res.found[i])
	}
	if len(res.added) > 0 {
		changed = true
	}
	all = append(all, res.added...)
	locs = append(locs, res.addLocs...)
	st.noted(all) // sizes measured since the last rebuild
	visible = all
	if nHidden > 0 {
		visible = make([]backend.Message, 0, len(all)-nHidden)
		for i, m := range all {
			if i < len(st.msgs) && res.state[i] == hidden {
				continue
			}
			visible = append(visible, m)
		}
	}
	return all, locs, visible, changed
}

// commit installs a built message list and publishes its snapshot. ch
// is the Changed channel taken when the scan started.
func (st *mboxState) commit(res *matchResult, all []backend.Message, locs []loc, visible []backend.Message, changed bool, l listing, ch chan struct{}) {
	for i, m := range st.msgs {
		if res.state[i] == missing {
			if st.byKey[m.Key] == m.UID {
				delete(st.byKey, m.Key)
			}
			delete(st.ext, m.UID)
		}
	}
	idx := st.keyIndex()
	for _, m := range res.added {
		idx[m.Key] = m.UID
	}
	st.msgs, st.locs = all, locs
	st.newID, st.curID = l.newID, l.curID
	st.curSettled = !recent(l.curID)
	st.publish(visible, changed, ch)
}

// publish installs the snapshot of visible. ch is the Changed channel
// taken when the scan started.
func (st *mboxState) publish(visible []backend.Message, changed bool, ch chan struct{}) {
	st.chMu.Lock()
	select {
	case <-ch:
		// A change arrived during the scan: hand out the closed channel so
		// that the caller looks again.
	default:
		if changed {
			// Holders of earlier snapshots must hear about this change.
			close(ch)
			st.changed = make(chan struct{})
			ch = st.changed
		}
	}
	st.chMu.Unlock()
	st.snap = backend.NewSnapshot(st.uidValidity, backend.UID(st.nextUID), visible[:len(visible):len(visible)], ch)
}

// keywords returns the shared, sorted keyword slice for letter bits.
func (st *mboxState) keywords(bits uint32) []string {
	if bits == 0 {
		return nil
	}
	if k, ok := st.kwCache[bits]; ok {
		return k
	}
	k := st.kw.names(bits)
	st.kwCache[bits] = k
	return k
}

// writeUidlist records all (the full message list) in the uidlist. When
// the first keep messages are exactly the records of the file on disk and
// that file is clean, only the rest are appended (O_APPEND; the header's N
// then lags, as in Dovecot's files), so a delivery costs its own records
// rather than the whole list. Otherwise (keep < 0: records dropped or
// changed, a new header, a rebuilt, torn or damaged file) the file is
// replaced by temp file + rename. Caller holds the uidlist lock.
func (st *mboxState) writeUidlist(all []backend.Message, keep int) error {
	p := filepath.Join(st.dir, uidlistName)
	if keep >= 0 && keep == st.fileRecs && st.fileClean && !st.mustWrite && st.loaded &&
		st.ulID.ok && statID(p) == st.ulID {
		if keep == len(all) {
			return nil
		}
		added, err := st.appendUidlist(p, all[keep:])
		if err != nil {
			st.loaded = false // reread before trusting memory again
			return fmt.Errorf("append to uidlist: %w", err)
		}
		if st.ulEnd == st.ulID.size {
			st.noteUidlist(st.ulEnd+int64(len(added)), st.ulTail, added)
		} else {
			st.ulTail = nil
		}
		st.fileRecs = len(all)
		st.ulID = statID(p)
		return nil
	}
	ul := uidlist{version: 3, uidValidity: st.uidValidity, nextUID: st.nextUID, hdrExtra: st.hdrExtra}
	ul.recs = make([]ulRec, len(all))
	for i, m := range all {
		ul.recs[i] = st.record(m)
	}
	data := ul.marshal()
	if err := writeAtomic(p, data, st.s.opts.Fsync, st.own, st.s.names); err != nil {
		st.loaded = false // reread before trusting memory again
		return fmt.Errorf("write uidlist: %w", err)
	}
	st.noteUidlist(int64(len(data)), nil, data)
	st.ulID = statID(p)
	st.fileRecs, st.fileClean = len(all), true
	return nil
}

func (st *mboxState) record(m backend.Message) ulRec {
	r := ulRec{uid: uint32(m.UID), key: m.Key, vsize: m.Size, uidl: m.UIDL, ext: st.ext[m.UID]}
	if !m.InternalDate.IsZero() {
		r.mtime = m.InternalDate.Unix()
	}
	return r
}

// appendUidlist appends records for msgs in one write. A crash part-way
// leaves a torn last line, which readers ignore and the next writer
// replaces.
func (st *mboxState) appendUidlist(p string, msgs []backend.Message) ([]byte, error) {
	var b bytes.Buffer
	for _, m := range msgs {
		r := st.record(m)
		r.appendTo(&b)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(b.Bytes())
	if err == nil && st.s.opts.Fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return b.Bytes(), err
}
