package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/roost-mail/roost/backend"
)

// roost-cache lets a new process open a big mailbox from one file, as
// Dovecot's index does: no directory listing and no parsing of
// dovecot-uidlist, and an answer from the file's head before its records
// are decoded (loadFromCache). It holds what a full open would have learnt from the
// uidlist, dovecot-keywords and a listing of new/ and cur/, recorded at a
// moment when those four had given identities (inode, size, mtime). It is
// trusted only while all four still have them, and is written only from
// state whose directories had been quiet for a second (so that a change
// within one timestamp tick cannot hide); a uidlist that had not is read
// again by the next open instead of being trusted. Dovecot and other
// tools ignore the file; deleting it is always safe. It is read, never
// mapped (Maildirs may be on NFS), and a file that fails a checksum or
// any check is ignored. Its format: cache_format.go.

const (
	cacheName  = "roost-cache"
	cacheMagic = "roost-cache 3\n"
	cacheQuiet = time.Second
)

// cacheIDs are the identities a cache is valid for.
type cacheIDs struct{ newID, curID, ulID, kwID fileID }

func (c cacheIDs) header() string {
	return fmt.Sprintf("%v %v %v %v", c.newID, c.curID, c.ulID, c.kwID)
}

// currentDirIDs returns the identities now on disk, and whether new/,
// cur/ and dovecot-keywords are old enough to be trusted: a change within
// one timestamp tick of the last would not show.
func (st *mboxState) currentDirIDs() (cacheIDs, bool) {
	c := cacheIDs{
		newID: statID(filepath.Join(st.dir, "new")),
		curID: statID(filepath.Join(st.dir, "cur")),
		ulID:  statID(filepath.Join(st.dir, uidlistName)),
		kwID:  statID(filepath.Join(st.dir, keywordsName)),
	}
	return c, quiet(c.newID) && quiet(c.curID) && (!c.kwID.ok || quiet(c.kwID))
}

func quiet(id fileID) bool { return id.ok && time.Since(time.Unix(0, id.mtime)) >= cacheQuiet }

// cacheState is what roost-cache records of an mboxState.
type cacheState struct {
	ids                  cacheIDs
	uidValidity, nextUID uint32
	fileRecs             int
	fileClean            bool
	ulSettled            bool // the uidlist had been quiet for a second
	ulEnd                int64
	ulTail               []byte
	hdrExtra             []string
	kw                   keywordTable
	msgs                 []backend.Message
	locs                 []loc
	ext                  map[backend.UID]string
	kwCache              map[uint32][]string // filled by parseCache
}

// writeCache records the current state if the files are quiet and match
// what memory was built from. Caller holds st.mu. Failures only cost speed.
//
// A uidlist changed within the last second is recorded too, marked as not
// settled: an open then reads it rather than trust the cache's copy (see
// loadWithUidlist), and a second later the cache is written again. So a
// first open, which writes the uidlist, leaves a cache that spares the
// next process the listing.
func (st *mboxState) writeCache() {
	c, quietDirs := st.currentDirIDs()
	settled := quiet(c.ulID)
	hdr := fmt.Sprintf("%s %v", c.header(), settled)
	if !quietDirs || c.newID != st.newID || c.curID != st.curID || c.ulID != st.ulID || c.kwID != st.kwID ||
		hdr == st.cacheHdr || !st.loaded || st.mustWrite || st.isDirty() {
		return
	}
	cs := &cacheState{ids: c, uidValidity: st.uidValidity, nextUID: st.nextUID, fileRecs: st.fileRecs,
		fileClean: st.fileClean, ulSettled: settled, ulEnd: st.ulEnd, ulTail: st.ulTail, hdrExtra: st.hdrExtra, kw: st.kw,
		msgs: st.msgs, locs: st.locs, ext: st.ext}
	data, err := cs.encode(st.keywords)
	if err == nil {
		err = writeAtomic(filepath.Join(st.dir, cacheName), data, false, st.own, st.s.names)
	}
	if err != nil {
		st.s.log.Debug("roost-cache not written", "dir", st.dir, "err", err)
		return
	}
	st.cacheHdr = hdr
	if !settled {
		// Settle it when the uidlist has been quiet for a second, even if
		// no Sync comes (the session ended, the server is stopping): the
		// next process then reads nothing else. Store.Close cancels this.
		wait := cacheQuiet - time.Since(time.Unix(0, c.ulID.mtime)) + 10*time.Millisecond
		st.s.bg.start(func(ctx context.Context) {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
				st.mu.Lock()
				st.writeCache()
				st.mu.Unlock()
			case <-ctx.Done():
			}
		})
	}
}

// loadFromCache opens the mailbox from roost-cache if it is valid: one
// file read, no directory listing, no uidlist (or, if only the uidlist
// changed, the uidlist and no listing: loadWithUidlist). It returns nil if
// the cache cannot be used. Otherwise the state is as a full open (loadState
// and a listing) would have left it once finish has run, if finish is
// not nil; until then the snapshot is pending. The caller holds st.mu and
// passes it to finish, which runs on another goroutine and lays out the
// message list: a new process answers SELECT on 100,000 messages from the
// file's head while the other core decodes the records.
func (st *mboxState) loadFromCache() (snap *backend.Snapshot, finish func()) {
	c, dirsQuiet := st.currentDirIDs()
	if !dirsQuiet {
		return nil, nil
	}
	cf, err := openCache(filepath.Join(st.dir, cacheName))
	if err != nil {
		return nil, nil
	}
	defer func() {
		if finish == nil {
			cf.file.Close()
		}
	}()
	f, err := parseCacheHead(cf.head)
	if err != nil {
		st.s.log.Debug("roost-cache ignored", "dir", st.dir, "err", err)
		return nil, nil
	}
	cs := f.cs
	if cs.ids.newID != c.newID || cs.ids.curID != c.curID || cs.ids.kwID != c.kwID {
		return nil, nil // the mailbox changed since it was written
	}
	if cs.ids.ulID != c.ulID || !cs.ulSettled || !quiet(c.ulID) {
		if err := cf.decode(f); err != nil {
			st.s.log.Debug("roost-cache ignored", "dir", st.dir, "err", err)
			return nil, nil
		}
		if !st.loadWithUidlist(cs, c) {
			return nil, nil
		}
		return st.snap, nil
	}
	snap, fill := backend.NewPendingSnapshot(cs.uidValidity, backend.UID(cs.nextUID), f.sum, st.startScan())
	st.snap = snap
	st.pending++
	st.pendingSnap.Store(snap)
	return snap, func() {
		defer st.pendingSnap.Store(nil)
		defer cf.file.Close()
		if err := cf.decode(f); err != nil {
			// Damage after the head, or a file Roost did not write: open
			// the long way on the next Sync, which shows what is there.
			st.s.log.Warn("roost-cache unusable; listing the mailbox instead", "dir", st.dir, "err", err)
			st.cacheBad = true
			fill(f.placeholders())
			st.snap = nil
			st.notify()
			return
		}
		st.kwID, st.kw, st.kwCache = c.kwID, cs.kw, cs.kwCache
		st.ulID, st.loaded, st.mustWrite = c.ulID, true, false
		st.fileRecs, st.fileClean = cs.fileRecs, cs.fileClean
		st.ulEnd, st.ulTail = cs.ulEnd, cs.ulTail
		st.uidValidity, st.nextUID, st.hdrExtra = cs.uidValidity, cs.nextUID, cs.hdrExtra
		st.msgs, st.locs, st.byKey, st.ext = cs.msgs, cs.locs, nil, cs.ext
		st.newID, st.curID = c.newID, c.curID
		st.curSettled = !recent(c.curID)
		st.cacheHdr = fmt.Sprintf("%s %v", c.header(), true)
		n := len(st.msgs)
		fill(st.msgs[:n:n])
	}
}

// cacheOnDisk is an open roost-cache file whose head is read.
type cacheOnDisk struct {
	file *os.File
	size int64
	head []byte
}

// openCache opens a roost-cache file and reads its head: about 4 bytes a
// message, in one read for a mailbox of up to 16,000 messages.
func openCache(path string) (*cacheOnDisk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	cf := &cacheOnDisk{file: f}
	if err := cf.readHead(); err != nil {
		f.Close()
		return nil, err
	}
	return cf, nil
}

func (cf *cacheOnDisk) readHead() error {
	fi, err := cf.file.Stat()
	if err != nil {
		return err
	}
	if cf.size = fi.Size(); cf.size > 1<<31 {
		return fmt.Errorf("roost-cache: %d bytes, too big", cf.size)
	}
	buf := make([]byte, min(cf.size, 64<<10))
	if _, err := io.ReadFull(cf.file, buf); err != nil {
		return err
	}
	n := cacheHeadLen(buf)
	if n == 0 || int64(n) > cf.size {
		return errors.New("roost-cache: not format 3")
	}
	if n <= len(buf) {
		cf.head = buf[:n]
		return nil
	}
	cf.head = make([]byte, n)
	copy(cf.head, buf)
	_, err = io.ReadFull(cf.file, cf.head[len(buf):])
	return err
}

// decode reads the records after the head and lays out the messages.
func (cf *cacheOnDisk) decode(f *cacheFile) error {
	f.alloc()
	recs := make([]byte, cf.size-int64(len(cf.head)))
	if _, err := cf.file.ReadAt(recs, int64(len(cf.head))); err != nil {
		return fmt.Errorf("roost-cache: read records: %w", err)
	}
	return f.decode(recs)
}

// loadWithUidlist opens the mailbox from a cache whose directories are as
// recorded but whose uidlist changed since (another process rewrote it,
// say to record the sizes of a first open, or appended records for files
// it has not placed yet): the uidlist is read as a full open reads it,
// and the listing is taken from the cache. Every file the cache lists
// must keep its UID and name in the list; a record whose file is not in
// the cache is dropped, as a listing would drop it. Anything else (a
// renumbered list, a record without its date) is left to the full open.
// Caller holds st.mu.
func (st *mboxState) loadWithUidlist(cs *cacheState, c cacheIDs) bool {
	ch := st.startScan()
	if err := st.loadState(false); err != nil || st.mustWrite || st.ulID != c.ulID || st.kwID != c.kwID || st.uidValidity != cs.uidValidity {
		st.loaded = false
		return false
	}
	msgs := make([]backend.Message, 0, len(cs.msgs))
	locs := make([]loc, 0, len(cs.msgs))
	j := 0
	for _, m := range st.msgs {
		if j < len(cs.msgs) && cs.msgs[j].UID < m.UID {
			break // a file the cache lists lost its record: renumbered
		}
		if j == len(cs.msgs) || cs.msgs[j].UID != m.UID {
			delete(st.ext, m.UID) // no file: dropped
			continue
		}
		cm := &cs.msgs[j]
		if cm.Key != m.Key || m.InternalDate.IsZero() {
			break
		}
		m.Flags, m.Keywords = cm.Flags, cm.Keywords
		msgs = append(msgs, m)
		locs = append(locs, cs.locs[j])
		j++
	}
	if j != len(cs.msgs) {
		st.loaded = false
		return false
	}
	st.kwCache = cs.kwCache // st.kw is the table the cache's keywords came from
	st.msgs, st.locs, st.byKey = msgs, locs, nil
	st.newID, st.curID = c.newID, c.curID
	st.curSettled = !recent(c.curID)
	n := len(msgs)
	st.snap = backend.NewSnapshot(st.uidValidity, backend.UID(st.nextUID), msgs[:n:n], ch)
	return true
}
