package maildir

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mail/roost/backend"
)

// mboxState is the in-process view of one mailbox directory, shared by all
// handles of this Store that have it open. Its mutex serialises this
// process's writers; other processes are excluded by the uidlist dotlock.

const (
	uidlistStale = 2 * time.Minute // Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT
	tmpMaxAge    = 36 * time.Hour  // Maildir spec and Dovecot
)

// loc is where a message file is now: its info part and directory.
type loc struct {
	info  string
	inNew bool
	known bool // false until a listing found the file
}

type mboxState struct {
	s    *Store
	dir  string
	refs int // guarded by s.mu

	mu          sync.Mutex
	loaded      bool
	uidValidity uint32
	nextUID     uint32
	hdrExtra    []string
	msgs        []backend.Message // ascending UID; never modified once published
	locs        []loc             // parallel to msgs
	byKey       map[string]backend.UID
	ext         map[backend.UID]string
	kw          keywordTable
	kwID        fileID
	kwCache     map[uint32][]string
	ulID        fileID
	// ulEnd and ulTail: how much of the uidlist this process last read or
	// wrote, and its final bytes. An append is recognised by finding those
	// bytes where they were: an inode number alone proves nothing, since a
	// rewritten list may get the old one back.
	ulEnd     int64
	ulTail    []byte
	newID     fileID
	curID     fileID
	snap      *backend.Snapshot
	own       owner
	mustWrite bool   // the uidlist on disk is missing or was rebuilt
	cacheBad  bool   // roost-cache passed its checksum but not its decoding
	fileRecs  int    // records in the uidlist file: st.msgs[:fileRecs] if nothing was dropped since
	fileClean bool   // the uidlist file is v3, newline-terminated, without bad lines: appendable
	cacheHdr  string // identities recorded in roost-cache

	chMu     sync.Mutex
	dirty    bool
	curDirty bool // some change since the last full listing may have touched cur/
	changed  chan struct{}
	// curSettled: cur/ had been quiet for a timestamp tick when last listed,
	// so an unchanged identity proves an unchanged directory even without
	// inotify.
	curSettled bool

	listings int // full listings of new/ and cur/, for tests
	pending  int // opens from roost-cache that answered before decoding, for tests
	// pendingSnap is the snapshot of an open from roost-cache while its
	// list is being decoded (st.mu is held meanwhile), else nil.
	pendingSnap atomic.Pointer[backend.Snapshot]

	// Sizes of messages other programs wrote, measured in the background
	// or on demand (measure.go).
	sizeMu      sync.Mutex
	sizes       map[string]int64  // by base name; measured, not yet in msgs
	measuring   bool              // guarded by mu: a measurer runs
	sizeChecked *backend.Snapshot // guarded by mu: last snapshot looked at for unknown sizes
	sizeReads   atomic.Int64      // message files read for their size, for tests

	stopWatch func()
	watched   atomic.Bool // inotify reports every change to new/ and cur/
}

// inSync reports whether memory matches the directories: a snapshot was
// published, inotify watches, no event came and no identity changed since
// the last listing. Only then may an own change skip the next listing.
// Caller holds st.mu.
func (st *mboxState) inSync() bool {
	return st.snap != nil && st.watched.Load() && !st.isDirty() &&
		statID(filepath.Join(st.dir, "new")) == st.newID &&
		statID(filepath.Join(st.dir, "cur")) == st.curID
}

// ownChange publishes st.msgs after a change this process made. If memory
// was in sync before the change (trusted) and still is, the new snapshot
// is built from memory and the directories' new identities recorded, so
// the next Sync needs no listing; a change by anyone else meanwhile shows
// as an inotify event and forces one. Caller holds st.mu.
func (st *mboxState) ownChange(trusted bool) {
	st.chMu.Lock()
	close(st.changed)
	st.changed = make(chan struct{})
	ch := st.changed
	dirty := st.dirty
	st.chMu.Unlock()
	if !trusted || dirty || st.snap == nil {
		st.snap = nil
		return
	}
	for _, lc := range st.locs {
		if !lc.known {
			st.snap = nil
			return
		}
	}
	st.newID = statID(filepath.Join(st.dir, "new"))
	st.curID = statID(filepath.Join(st.dir, "cur"))
	st.curSettled = false
	// Capped: deliver appends to st.msgs in place, beyond what this shows.
	n := len(st.msgs)
	st.snap = backend.NewSnapshot(st.uidValidity, backend.UID(st.nextUID), st.msgs[:n:n], ch)
}

func (st *mboxState) path(i int) string {
	sub := "cur"
	if st.locs[i].inNew {
		sub = "new"
	}
	return filepath.Join(st.dir, sub, st.msgs[i].Key+st.locs[i].info)
}

// notify closes the current Changed channel: every snapshot handed out so
// far is now possibly out of date.
func (st *mboxState) notify() { st.notifyChange(true) }

// notifyNew is notify for a change seen in new/ alone, which the next Sync
// may pick up without listing cur/.
func (st *mboxState) notifyNew() { st.notifyChange(false) }

func (st *mboxState) notifyChange(cur bool) {
	st.chMu.Lock()
	st.dirty = true
	st.curDirty = st.curDirty || cur
	close(st.changed)
	st.changed = make(chan struct{})
	st.chMu.Unlock()
}

// startScan clears the dirty flags and returns the channel that the
// snapshot being built will carry; a change during the scan closes it.
func (st *mboxState) startScan() chan struct{} {
	st.chMu.Lock()
	defer st.chMu.Unlock()
	st.dirty, st.curDirty = false, false
	return st.changed
}

// startNewScan is startScan for a scan of new/ alone; it fails if cur/ may
// have changed since it was last listed.
func (st *mboxState) startNewScan() (chan struct{}, bool) {
	st.chMu.Lock()
	defer st.chMu.Unlock()
	if st.curDirty {
		return nil, false
	}
	st.dirty = false
	return st.changed, true
}

func (st *mboxState) isDirty() bool {
	st.chMu.Lock()
	defer st.chMu.Unlock()
	return st.dirty
}

// keyIndex returns the base name -> UID index, building it on first use.
// A name listed twice keeps its lower UID; the other record then finds no
// file and is dropped.
func (st *mboxState) keyIndex() map[string]backend.UID {
	if st.byKey != nil {
		return st.byKey
	}
	st.byKey = make(map[string]backend.UID, len(st.msgs))
	for _, m := range st.msgs {
		if _, dup := st.byKey[m.Key]; dup {
			st.s.log.Warn("dovecot-uidlist lists a file twice; keeping the lower UID", "dir", st.dir, "file", m.Key)
			continue
		}
		st.byKey[m.Key] = m.UID
	}
	return st.byKey
}

func (st *mboxState) find(uid backend.UID) int {
	i := sort.Search(len(st.msgs), func(i int) bool { return st.msgs[i].UID >= uid })
	if i < len(st.msgs) && st.msgs[i].UID == uid {
		return i
	}
	return -1
}

// sync returns a current snapshot, rescanning only when something changed.
func (st *mboxState) sync(ctx context.Context, force bool) (*backend.Snapshot, error) {
	if p := st.pendingSnap.Load(); p != nil && !force {
		select {
		case <-p.Changed:
		default:
			return p, nil // without waiting for the decoder, which holds st.mu
		}
	}
	st.mu.Lock()
	if !force && st.snap == nil && !st.loaded && !st.cacheBad {
		if snap, finish := st.loadFromCache(); finish != nil {
			st.finishLoad(finish)
			return snap, nil
		} else if snap != nil {
			st.startMeasuring()
			st.mu.Unlock()
			return snap, nil
		}
	}
	defer st.mu.Unlock()
	snap, err := st.syncLocked(ctx, force)
	if err == nil {
		st.startMeasuring()
	}
	return snap, err
}

// finishLoad runs finish on another goroutine, which takes over st.mu
// (held by the caller) and a reference to st, and releases both when the
// state is complete. Every other use of the state waits for it meanwhile.
func (st *mboxState) finishLoad(finish func()) {
	st.s.mu.Lock()
	st.refs++
	st.s.mu.Unlock()
	run := func(context.Context) {
		defer st.s.releaseState(st)
		defer st.mu.Unlock()
		finish()
		st.startMeasuring()
	}
	if !st.s.bg.start(run) {
		run(context.Background()) // the Store is closing
	}
}

func (st *mboxState) syncLocked(ctx context.Context, force bool) (*backend.Snapshot, error) {
	if _, err := os.Stat(st.dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s was deleted", backend.ErrNoSuchMailbox, st.dir)
		}
		return nil, err
	}
	if !force && st.snap != nil && !st.isDirty() &&
		statID(filepath.Join(st.dir, "new")) == st.newID &&
		statID(filepath.Join(st.dir, "cur")) == st.curID &&
		statID(filepath.Join(st.dir, uidlistName)) == st.ulID &&
		(st.watched.Load() || !recent(st.newID) && !recent(st.curID)) {
		st.writeCache()
		return st.snap, nil
	}
	if !force {
		done, err := st.pickUpNew(ctx)
		if err != nil {
			return nil, err
		}
		if done {
			st.writeCache()
			return st.snap, nil
		}
	}
	if err := st.rescan(ctx, nil); err != nil {
		return nil, err
	}
	st.writeCache()
	return st.snap, nil
}

// recent reports whether a directory changed so lately that a further
// change within the file system's timestamp granularity would not show.
func recent(id fileID) bool {
	return time.Since(time.Unix(0, id.mtime)) < time.Second
}

// listing is one read of new/ and cur/.
type listing struct {
	newID, curID fileID
	names        []string // "new/" names first, then "cur/"
	nNew         int
	stable       bool
}

func (st *mboxState) list() (listing, error) {
	var l listing
	st.listings++
	for attempt := 0; attempt < 4; attempt++ {
		nb := statID(filepath.Join(st.dir, "new"))
		cb := statID(filepath.Join(st.dir, "cur"))
		// new/ first: a file moving new -> cur meanwhile is then seen in cur/.
		nn, err := readNames(filepath.Join(st.dir, "new"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return l, fmt.Errorf("list %s/new: %w", st.dir, err)
		}
		cn, err := readNames(filepath.Join(st.dir, "cur"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return l, fmt.Errorf("list %s/cur: %w", st.dir, err)
		}
		l = listing{newID: nb, curID: cb, names: append(nn, cn...), nNew: len(nn)}
		l.stable = statID(filepath.Join(st.dir, "new")) == nb && statID(filepath.Join(st.dir, "cur")) == cb
		if l.stable {
			break
		}
	}
	return l, nil
}

// rescan matches the directory listing with the uidlist, gives UIDs to new
// files and publishes a new snapshot. lk is the uidlist lock if the caller
// holds it. Caller holds st.mu.
func (st *mboxState) rescan(ctx context.Context, lk *dotlock) error {
	ownLock := false
	defer func() {
		if ownLock {
			if err := lk.release(); err != nil {
				st.s.log.Error("release uidlist lock", "dir", st.dir, "err", err)
			}
		}
	}()
	var l listing
	var res matchResult
	reuse := false
	var ch chan struct{}
	for {
		if !reuse {
			ch = st.startScan()
			// The uidlist before the listing: writers place a file before
			// they record it, so every record read has its file in the
			// listing unless it really went. (Read after the listing, a
			// record could name a file placed just after it, which would
			// then be dropped and later numbered twice.)
			if err := st.loadState(lk != nil); err != nil {
				return err
			}
			var err error
			if l, err = st.list(); err != nil {
				return err
			}
			res = st.match(l)
		}
		if len(res.unknown) == 0 && res.enrich == nil && !st.mustWrite {
			all, locs, visible, changed := st.build(&res)
			st.commit(&res, all, locs, visible, changed, l, ch)
			return nil
		}
		if lk == nil {
			// Take the lock and look again: another writer may have given
			// these files UIDs while we waited.
			ul := st.ulID
			var err error
			lk, err = st.lockUidlist(ctx)
			if err != nil {
				return err
			}
			ownLock = true
			// Nothing moved while we waited: the listing still holds.
			reuse = l.stable && statID(filepath.Join(st.dir, uidlistName)) == ul &&
				statID(filepath.Join(st.dir, "new")) == l.newID && statID(filepath.Join(st.dir, "cur")) == l.curID
			continue
		}
		next := st.nextUID
		st.assign(&res)
		all, locs, visible, changed := st.build(&res)
		// Only new files: their records can be appended, unless a record
		// was dropped or enriched.
		keep := len(all) - len(res.added)
		if res.enrich != nil {
			keep = -1
		}
		if err := st.writeUidlist(all, keep); err != nil {
			st.nextUID = next
			return err
		}
		st.mustWrite = false
		st.commit(&res, all, locs, visible, changed, l, ch)
		return nil
	}
}

func (st *mboxState) lockUidlist(ctx context.Context) (*dotlock, error) {
	lk, err := acquireDotlock(ctx, filepath.Join(st.dir, uidlistName+".lock"), uidlistStale, st.s.lockWait(), st.s.names)
	if err != nil {
		return nil, fmt.Errorf("lock uidlist of %s: %w", st.dir, err)
	}
	return lk, nil
}

// loadState reloads the uidlist and keywords if they changed on disk (or
// were never read). With the lock held the result is authoritative.
func (st *mboxState) loadState(locked bool) error {
	kwPath := filepath.Join(st.dir, keywordsName)
	if id := statID(kwPath); !st.loaded || id != st.kwID {
		st.kwID = id
		st.kw = keywordTable{}
		st.kwCache = map[uint32][]string{}
		if data, err := os.ReadFile(kwPath); err == nil {
			kt, warns := parseKeywords(data)
			for _, w := range warns {
				st.s.log.Warn("dovecot-keywords: bad line; those keyword letters stay on the files but show no keyword", "file", kwPath, "problem", w)
			}
			st.kw = kt
		}
	}
	ulPath := filepath.Join(st.dir, uidlistName)
	id := statID(ulPath)
	if st.loaded && id == st.ulID {
		return nil
	}
	if st.loaded && st.readTail(ulPath, id) {
		return nil
	}
	ul, fresh, clean, err := st.readUidlist(ulPath, locked)
	if err != nil {
		return err
	}
	st.mustWrite = fresh
	st.fileRecs, st.fileClean = len(ul.recs), clean && !fresh
	st.ulID = id
	st.loaded = true
	st.uidValidity, st.nextUID, st.hdrExtra = ul.uidValidity, ul.nextUID, ul.hdrExtra
	oldMsgs, oldLocs := st.msgs, st.locs
	st.msgs = make([]backend.Message, 0, len(ul.recs))
	st.locs = make([]loc, 0, len(ul.recs))
	st.byKey = nil // built when a listing needs it
	st.ext = map[backend.UID]string{}
	j := 0
	for _, r := range ul.recs {
		m := r.message()
		lc := loc{}
		// Keep what we knew about the file (flags, place) if UID and key
		// agree; both lists ascend by UID.
		for j < len(oldMsgs) && oldMsgs[j].UID < m.UID {
			j++
		}
		if j < len(oldMsgs) && oldMsgs[j].UID == m.UID && oldMsgs[j].Key == m.Key {
			om := oldMsgs[j]
			m.Flags, m.Keywords, lc = om.Flags, om.Keywords, oldLocs[j]
			if m.Size < 0 {
				m.Size = om.Size
			}
			if m.InternalDate.IsZero() {
				m.InternalDate = om.InternalDate
			}
		}
		st.msgs = append(st.msgs, m)
		st.locs = append(st.locs, lc)
		if r.ext != "" {
			st.ext[m.UID] = r.ext
		}
	}
	return nil
}

// message is what a record says about its message; flags come from the
// file name.
func (r *ulRec) message() backend.Message {
	m := backend.Message{UID: backend.UID(r.uid), Key: r.key, Size: r.vsize, UIDL: r.uidl, POP3Order: r.order}
	if m.Size < 0 {
		if w, ok := sizeField(r.key, 'W'); ok {
			m.Size = w
		}
	}
	if r.mtime > 0 {
		m.InternalDate = time.Unix(r.mtime, 0)
	}
	return m
}

// readTail reads only the records appended to the uidlist since it was
// last read or written (the same file, grown), as Dovecot does: a delivery
// by another process then costs its own records, not the whole list. It
// reports false when the file must be read whole. Caller holds st.mu.
func (st *mboxState) readTail(path string, id fileID) bool {
	tail := st.ulTail
	if !st.fileClean || st.mustWrite || len(tail) == 0 || tail[len(tail)-1] != '\n' ||
		!st.ulID.ok || !id.ok || id.ino != st.ulID.ino || id.size <= st.ulEnd {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || idOf(fi).ino != id.ino {
		return false
	}
	// From the known final bytes up to the size seen: whole lines only.
	from := st.ulEnd - int64(len(tail))
	buf := make([]byte, id.size-from)
	if _, err := f.ReadAt(buf, from); err != nil || !bytes.Equal(buf[:len(tail)], tail) || buf[len(buf)-1] != '\n' {
		return false
	}
	added := buf[len(tail):]
	var recs []ulRec
	next := st.nextUID
	for _, line := range strings.Split(string(added[:len(added)-1]), "\n") {
		if line == "" {
			continue
		}
		r, err := parseUidlistRec(line, 3)
		if err != nil || r.uid < next {
			return false // let the full read judge and log it
		}
		next = r.uid + 1
		recs = append(recs, r)
	}
	// Appended in place, past what any published snapshot shows.
	for _, r := range recs {
		m := r.message()
		st.msgs = append(st.msgs, m)
		st.locs = append(st.locs, loc{})
		if r.ext != "" {
			st.ext[m.UID] = r.ext
		}
		if st.byKey != nil {
			if _, dup := st.byKey[m.Key]; !dup {
				st.byKey[m.Key] = m.UID
			}
		}
	}
	st.nextUID = next
	st.fileRecs += len(recs)
	st.ulID = id
	st.noteUidlist(id.size, tail, added)
	return true
}

// tailCheck is how many final bytes of the uidlist identify it.
const tailCheck = 128

// noteUidlist records that the uidlist now ends at end with the bytes
// prev followed by added.
func (st *mboxState) noteUidlist(end int64, prev, added []byte) {
	if len(added) >= tailCheck {
		prev, added = nil, added[len(added)-tailCheck:]
	}
	t := append(append(make([]byte, 0, len(prev)+len(added)), prev...), added...)
	st.ulEnd, st.ulTail = end, t[max(0, len(t)-tailCheck):]
}

// readUidlist reads dovecot-uidlist, importing courierimapuiddb or starting
// a fresh list when there is none. A corrupt list is rebuilt keeping its
// UIDVALIDITY when the header can still be read. clean reports a v3 file
// with no bad or torn line, to which new records may be appended.
func (st *mboxState) readUidlist(path string, locked bool) (ul *uidlist, fresh, clean bool, err error) {
	st.ulTail = nil
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, false, fmt.Errorf("read %s: %w", path, err)
	}
	if err == nil {
		parsed, warns, perr := parseUidlist(data)
		if perr == nil {
			st.noteUidlist(int64(len(data)), nil, data)
		}
		for _, w := range warns {
			st.s.log.Warn("dovecot-uidlist: bad record; its message gets a new UID", "file", path, "problem", w)
		}
		if perr == nil {
			if parsed.torn {
				if locked {
					// Under the lock no append is under way: a writer died
					// mid-append. The next write replaces the file.
					st.s.log.Warn("dovecot-uidlist ends in a torn line (a write cut short); ignored, its UID is not reused, the file will be rewritten", "file", path)
				} else {
					// Rare (appends are one write): worth a line, since it
					// may also be a crash's leftover.
					st.s.log.Warn("dovecot-uidlist ends in an unterminated line (an append under way, or one cut short); ignored, its UID is not reused", "file", path)
				}
			}
			return parsed, false, len(warns) == 0 && !parsed.torn && parsed.version == 3, nil
		}
		if !locked && len(data) == 0 {
			// Another writer may be mid-way; Roost and Dovecot rename
			// complete files, so an empty file is someone else's damage.
			st.s.log.Warn("dovecot-uidlist is empty", "file", path)
		}
		st.s.log.Error("dovecot-uidlist is unreadable; rebuilding it", "file", path, "err", perr)
		salvaged, _ := salvageUIDValidity(data)
		if mem, ok := st.fromMemory(salvaged); ok {
			st.s.log.Warn("dovecot-uidlist rebuilt from this process's copy, keeping UIDVALIDITY and UIDs", "file", path, "uidvalidity", mem.uidValidity, "records", len(mem.recs))
			return mem, true, false, nil
		}
		if old := salvaged; old != nil {
			old.hdrExtra = []string{newMailboxGUID()}
			st.s.log.Warn("dovecot-uidlist rebuilt keeping its UIDVALIDITY and readable records", "file", path, "uidvalidity", old.uidValidity, "records", len(old.recs))
			return old, true, false, nil
		}
		return st.freshUidlist(), true, false, nil
	}
	cpath := filepath.Join(st.dir, "courierimapuiddb")
	if cdata, cerr := os.ReadFile(cpath); cerr == nil {
		cul, warns, perr := parseUidlist(cdata)
		if perr == nil && cul.version == 1 {
			for _, w := range warns {
				st.s.log.Warn("courierimapuiddb: bad record", "file", cpath, "problem", w)
			}
			st.s.log.Info("importing Courier UIDs into dovecot-uidlist", "file", cpath, "messages", len(cul.recs))
			cul.version = 3
			cul.hdrExtra = []string{newMailboxGUID()}
			return cul, true, false, nil
		}
		st.s.log.Warn("courierimapuiddb unreadable; ignoring it", "file", cpath, "err", perr)
	}
	if mem, ok := st.fromMemory(nil); ok {
		st.s.log.Warn("dovecot-uidlist vanished; rewritten from this process's copy, keeping UIDVALIDITY and UIDs", "file", path, "uidvalidity", mem.uidValidity, "records", len(mem.recs))
		return mem, true, false, nil
	}
	return st.freshUidlist(), true, false, nil
}

// fromMemory rebuilds a lost or damaged uidlist from what this process
// last read, so that its open sessions and clients keep their UIDs. Records
// that survived on disk (salvaged, may be nil) win for their files, being
// newer, and no UID at or below either list's next UID is given again.
func (st *mboxState) fromMemory(salvaged *uidlist) (*uidlist, bool) {
	if !st.loaded || st.uidValidity == 0 || (salvaged != nil && salvaged.uidValidity != st.uidValidity) {
		return nil, false
	}
	ul := &uidlist{version: 3, uidValidity: st.uidValidity, nextUID: st.nextUID, hdrExtra: st.hdrExtra}
	byUID := map[uint32]ulRec{}
	for _, m := range st.msgs {
		byUID[uint32(m.UID)] = ulRec{uid: uint32(m.UID), key: m.Key, vsize: m.Size, mtime: m.InternalDate.Unix(), uidl: m.UIDL, ext: st.ext[m.UID]}
	}
	if salvaged != nil {
		for _, r := range salvaged.recs {
			byUID[r.uid] = r
		}
		ul.nextUID = max(ul.nextUID, salvaged.nextUID)
	}
	seen := map[string]bool{}
	for _, r := range byUID {
		ul.recs = append(ul.recs, r)
	}
	slices.SortFunc(ul.recs, func(a, b ulRec) int { return cmp.Compare(a.uid, b.uid) })
	out := ul.recs[:0]
	for _, r := range ul.recs {
		if !seen[r.key] { // one UID per file: the lowest, as readers do
			seen[r.key] = true
			out = append(out, r)
		}
		ul.nextUID = max(ul.nextUID, r.uid+1)
	}
	ul.recs = out
	return ul, true
}

// salvageUIDValidity rebuilds a damaged list from whatever survives: the
// V and N fields of the header and every well-formed record after it.
func salvageUIDValidity(data []byte) (*uidlist, bool) {
	hdr, rest, _ := strings.Cut(string(data), "\n")
	var v, n string
	for _, f := range strings.Fields(hdr) {
		if len(f) > 1 && (f[0] == 'V' || f[0] == 'N') && strings.Trim(f[1:], "0123456789") == "" {
			if f[0] == 'V' {
				v = f
			} else {
				n = f
			}
		}
	}
	if v == "" {
		return nil, false
	}
	if n == "" {
		n = "N1"
	}
	ul, _, err := parseUidlist([]byte("3 " + v + " " + n + "\n" + rest))
	if err != nil {
		return nil, false
	}
	return ul, true
}

// freshUidlist starts a new list. Its UIDVALIDITY is above every one this
// mailbox had before (kept in roost-uidvalidity beside the list): a list
// lost and rebuilt within the same second must not reuse the old value
// with new numbering, or clients would take new UIDs for old ones.
func (st *mboxState) freshUidlist() *uidlist {
	v := st.s.nextUIDValidity()
	floor := filepath.Join(st.dir, uidvalidityFloorName)
	if b, err := os.ReadFile(floor); err == nil {
		if last, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && uint64(v) <= last {
			v = uint32(last) + 1
		}
	}
	if err := writeAtomic(floor, []byte(strconv.FormatUint(uint64(v), 10)+"\n"), st.s.opts.Fsync, st.own, st.s.names); err != nil {
		st.s.log.Warn("cannot record the mailbox's UIDVALIDITY", "file", floor, "err", err)
	}
	return &uidlist{version: 3, uidValidity: v, nextUID: 1, hdrExtra: []string{newMailboxGUID()}}
}

// uidvalidityFloorName holds the last UIDVALIDITY given to a mailbox.
const uidvalidityFloorName = "roost-uidvalidity"
