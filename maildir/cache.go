package maildir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mail/roost/backend"
)

// roost-cache lets a new process open a big mailbox without listing its
// directories, as Dovecot's index does: it records where each message's
// file was (new/ or cur/, and its info part) at a moment when new/, cur/
// and dovecot-uidlist had given identities. It is trusted only while all
// three still have them, and is written only from listings whose
// directories had been quiet for a second (so that a change within one
// timestamp tick cannot hide). Dovecot and other tools ignore the file;
// deleting it is always safe.
//
//	roost-cache 1
//	<new ino> <new mtime ns> <cur ino> <cur mtime ns> <uidlist ino> <size> <mtime ns>
//	<uid> <n|c><info>      one line per message, ascending UID

const (
	cacheName  = "roost-cache"
	cacheQuiet = time.Second
)

type cacheIDs struct{ newID, curID, ulID fileID }

func (c cacheIDs) header() string {
	return fmt.Sprintf("%d %d %d %d %d %d %d", c.newID.ino, c.newID.mtime, c.curID.ino, c.curID.mtime, c.ulID.ino, c.ulID.size, c.ulID.mtime)
}

// currentCacheIDs returns the identities now on disk, and whether they are
// old enough to be trusted.
func (st *mboxState) currentCacheIDs() (cacheIDs, bool) {
	c := cacheIDs{
		newID: statID(filepath.Join(st.dir, "new")),
		curID: statID(filepath.Join(st.dir, "cur")),
		ulID:  statID(filepath.Join(st.dir, uidlistName)),
	}
	quiet := func(id fileID) bool { return id.ok && time.Since(time.Unix(0, id.mtime)) >= cacheQuiet }
	return c, quiet(c.newID) && quiet(c.curID) && quiet(c.ulID)
}

// writeCache records the current state if the directories are quiet and
// match the last listing. Caller holds st.mu. Failures only cost speed.
func (st *mboxState) writeCache() {
	c, quiet := st.currentCacheIDs()
	if !quiet || c.newID != st.newID || c.curID != st.curID || c.ulID != st.ulID || c.header() == st.cacheHdr {
		return
	}
	var b bytes.Buffer
	b.Grow(32 + len(st.msgs)*16)
	b.WriteString("roost-cache 1\n")
	b.WriteString(c.header())
	b.WriteByte('\n')
	var num [20]byte
	for i, m := range st.msgs {
		lc := st.locs[i]
		if !lc.known {
			return // not everything was seen: no cache
		}
		b.Write(strconv.AppendUint(num[:0], uint64(m.UID), 10))
		if lc.inNew {
			b.WriteString(" n")
		} else {
			b.WriteString(" c")
		}
		b.WriteString(lc.info)
		b.WriteByte('\n')
	}
	if err := writeAtomic(filepath.Join(st.dir, cacheName), b.Bytes(), false, st.own, st.s.names); err != nil {
		st.s.log.Debug("cannot write roost-cache", "dir", st.dir, "err", err)
		return
	}
	st.cacheHdr = c.header()
}

// loadFromCache opens the mailbox from roost-cache if it is valid: one
// uidlist read, no directory listing. Caller holds st.mu.
func (st *mboxState) loadFromCache() bool {
	c, quiet := st.currentCacheIDs()
	if !quiet {
		return false
	}
	data, err := os.ReadFile(filepath.Join(st.dir, cacheName))
	if err != nil {
		return false
	}
	s := string(data)
	magic, s, _ := strings.Cut(s, "\n")
	hdr, body, ok := strings.Cut(s, "\n")
	if magic != "roost-cache 1" || !ok || hdr != c.header() {
		return false
	}
	ch := st.startScan()
	if err := st.loadState(false); err != nil || st.ulID != c.ulID || st.mustWrite {
		st.loaded = false
		return false
	}
	msgs := make([]backend.Message, 0, len(st.msgs))
	locs := make([]loc, 0, len(st.msgs))
	infos := map[string]string{}
	j := 0
	for len(body) > 0 {
		var line string
		line, body, _ = strings.Cut(body, "\n")
		sp := strings.IndexByte(line, ' ')
		if sp < 0 || sp+2 > len(line) {
			st.loaded = false
			return false
		}
		uid, err := strconv.ParseUint(line[:sp], 10, 32)
		if err != nil {
			st.loaded = false
			return false
		}
		for j < len(st.msgs) && uint64(st.msgs[j].UID) < uid {
			j++ // in the uidlist, file gone
		}
		if j == len(st.msgs) || uint64(st.msgs[j].UID) != uid {
			st.loaded = false // the cache names a UID the list lacks
			return false
		}
		m := st.msgs[j]
		if m.Size < 0 || m.InternalDate.IsZero() {
			st.loaded = false
			return false
		}
		info := line[sp+2:]
		in, ok := infos[info]
		if !ok {
			in = st.s.intern(info)
			infos[info] = in
		}
		fl, kw := parseInfo(in)
		m.Flags, m.Keywords = fl, st.keywords(kw)
		msgs = append(msgs, m)
		locs = append(locs, loc{info: in, inNew: line[sp+1] == 'n', known: true})
		j++
	}
	st.msgs, st.locs, st.byKey = msgs, locs, nil
	st.newID, st.curID = c.newID, c.curID
	st.cacheHdr = c.header()
	st.snap = &backend.Snapshot{UIDValidity: st.uidValidity, UIDNext: backend.UID(st.nextUID), Messages: msgs[:len(msgs):len(msgs)], Changed: ch}
	return true
}
