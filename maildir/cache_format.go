package maildir

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/roost-mail/roost/backend"
)

// roost-cache format 3 (see cache.go for what it is for): a head and the
// records, each with its checksum. Integers are Go varints (u: unsigned,
// s: zigzag), b is a u length then the bytes:
//
//	head:
//	"roost-cache 3\n", 4 bytes head length (all of the head), little-endian
//	u n messages
//	4 × identity: byte present, u inode, s size, s mtime ns   (new/ cur/ uidlist keywords)
//	u UIDVALIDITY, u next UID, u uidlist records, byte uidlist appendable,
//	byte uidlist settled (quiet for a second), s uidlist length read, b its final bytes
//	u n, n × b uidlist header field (other than V and N)
//	26 × b keyword of letter a..z ("" if none)
//	u n, n × b info part (":2,S", ...)
//	u unseen, u deleted, u 1 + index of the first unseen message (0: none)
//	n × 4 bytes UID, little-endian, ascending
//	CRC-32C of the head so far, 4 bytes little-endian
//	records:
//	b the messages' keys (base file names) one after another
//	n × message:
//	  byte bits (1 in new/, 2 no date, 4 UIDL, 8 uidlist fields, 16 POP3 order)
//	  u size + 1, [s date - previous date, Unix seconds]
//	  u info index, u key length, [b UIDL], [b other uidlist fields], [u POP3 order]
//	CRC-32C of the records, 4 bytes little-endian
//
// The head is what IMAP SELECT needs: a new process reads and answers
// from it (about 4 bytes a message) and reads and decodes the records
// meanwhile (cache.go). The keys are one run so that they are checked at
// memory speed and become substrings of one string: no allocation per
// message.

// encode serialises cs. keywords gives the keyword list of letter bits, to
// check that every message's flags are those of its file name.
func (cs *cacheState) encode(keywords func(uint32) []string) ([]byte, error) {
	if len(cs.locs) != len(cs.msgs) || cs.fileRecs < len(cs.msgs) {
		return nil, errors.New("message list and file state disagree")
	}
	b := make([]byte, 0, 256+len(cs.msgs)*16+len(cs.msgs)*len(firstKey(cs.msgs)))
	b = append(b, cacheMagic...)
	b = append(b, 0, 0, 0, 0) // the head's length, below
	b = binary.AppendUvarint(b, uint64(len(cs.msgs)))
	for _, id := range []fileID{cs.ids.newID, cs.ids.curID, cs.ids.ulID, cs.ids.kwID} {
		b = appendBool(b, id.ok)
		b = binary.AppendUvarint(b, id.ino)
		b = binary.AppendVarint(b, id.size)
		b = binary.AppendVarint(b, id.mtime)
	}
	b = binary.AppendUvarint(b, uint64(cs.uidValidity))
	b = binary.AppendUvarint(b, uint64(cs.nextUID))
	b = binary.AppendUvarint(b, uint64(cs.fileRecs))
	b = appendBool(b, cs.fileClean)
	b = appendBool(b, cs.ulSettled)
	b = binary.AppendVarint(b, cs.ulEnd)
	b = appendBytes(b, string(cs.ulTail))
	b = binary.AppendUvarint(b, uint64(len(cs.hdrExtra)))
	for _, f := range cs.hdrExtra {
		b = appendBytes(b, f)
	}
	for _, k := range cs.kw {
		b = appendBytes(b, k)
	}
	infos := map[string]uint64{}
	var table []string
	for _, lc := range cs.locs {
		if !lc.known {
			return nil, errors.New("a message was not seen in the last listing")
		}
		if _, ok := infos[lc.info]; !ok {
			infos[lc.info] = uint64(len(table))
			table = append(table, lc.info)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(table)))
	for _, in := range table {
		b = appendBytes(b, in)
	}
	sum := backend.Summarize(cs.msgs)
	b = binary.AppendUvarint(b, uint64(sum.Unseen))
	b = binary.AppendUvarint(b, uint64(sum.Deleted))
	b = binary.AppendUvarint(b, uint64(sum.FirstUnseen+1))
	for _, m := range cs.msgs {
		b = binary.LittleEndian.AppendUint32(b, uint32(m.UID))
	}
	binary.LittleEndian.PutUint32(b[len(cacheMagic):], uint32(len(b)+4))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	recs := len(b)
	keys := 0
	for _, m := range cs.msgs {
		keys += len(m.Key)
	}
	b = binary.AppendUvarint(b, uint64(keys))
	for _, m := range cs.msgs {
		b = append(b, m.Key...)
	}
	var prevUID backend.UID
	var prevDate int64
	for i, m := range cs.msgs {
		lc := cs.locs[i]
		if fl, kw := parseInfo(lc.info); fl != m.Flags || !sameStrings(keywords(kw), m.Keywords) {
			return nil, fmt.Errorf("UID %d: flags differ from its file name", m.UID)
		}
		if m.UID <= prevUID || m.Size < -1 {
			return nil, fmt.Errorf("UID %d: out of order or bad size", m.UID)
		}
		ext := cs.ext[m.UID]
		var bits byte
		if lc.inNew {
			bits |= 1
		}
		if m.InternalDate.IsZero() {
			bits |= 2
		}
		if m.UIDL != "" {
			bits |= 4
		}
		if ext != "" {
			bits |= 8
		}
		if m.POP3Order != 0 {
			bits |= 16
		}
		b = append(b, bits)
		b = binary.AppendUvarint(b, uint64(m.Size+1))
		if !m.InternalDate.IsZero() {
			// Seconds, as the uidlist's T field gives them to a full open.
			d := m.InternalDate.Unix()
			b = binary.AppendVarint(b, d-prevDate)
			prevDate = d
		}
		b = binary.AppendUvarint(b, infos[lc.info])
		b = binary.AppendUvarint(b, uint64(len(m.Key)))
		if m.UIDL != "" {
			b = appendBytes(b, m.UIDL)
		}
		if ext != "" {
			b = appendBytes(b, ext)
		}
		if m.POP3Order != 0 {
			b = binary.AppendUvarint(b, uint64(m.POP3Order))
		}
		prevUID = m.UID
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[recs:], castagnoli)), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func firstKey(msgs []backend.Message) string {
	if len(msgs) == 0 {
		return ""
	}
	return msgs[0].Key
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// cacheReader decodes data; s holds the same bytes, and every string
// decoded is a substring of it, so that 100,000 keys cost no allocation.
// After an error every read returns zero values and err says where the
// first one was.
type cacheReader struct {
	data []byte
	s    string
	off  int
	err  error
}

// newCacheReader reads data from off; the strings it returns share
// data's memory, which nothing writes after this.
func newCacheReader(data []byte, off int) *cacheReader {
	return &cacheReader{data: data, s: unsafe.String(unsafe.SliceData(data), len(data)), off: off}
}

func (r *cacheReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("roost-cache: bad %s at byte %d", what, r.off)
	}
	r.off = len(r.data)
}

// uvarint and byte are small enough to be inlined: they run a few times
// per message.
func (r *cacheReader) uvarint() uint64 {
	if d := r.data[r.off:]; len(d) > 0 && d[0] < 0x80 {
		r.off++
		return uint64(d[0])
	}
	return r.uvarintLong()
}

func (r *cacheReader) uvarintLong() uint64 {
	v, n := binary.Uvarint(r.data[r.off:])
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.off += n
	return v
}

func (r *cacheReader) varint() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

// byte returns 0xff past the end, which every caller rejects.
func (r *cacheReader) byte() byte {
	if d := r.data[r.off:]; len(d) > 0 {
		r.off++
		return d[0]
	}
	return 0xff
}

func (r *cacheReader) bool(what string) bool {
	b := r.byte()
	if b > 1 {
		r.fail(what)
	}
	return b == 1
}

func (r *cacheReader) str(what string) string {
	n := r.uvarint()
	if n > uint64(len(r.data)-r.off) {
		r.fail(what)
		return ""
	}
	s := r.s[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

// count reads a number of items that each take at least one byte.
func (r *cacheReader) count(what string) int {
	n := r.uvarint()
	if n > uint64(len(r.data)-r.off) {
		r.fail(what)
		return 0
	}
	return int(n)
}

func (r *cacheReader) u32(what string) uint32 {
	n := r.uvarint()
	if n > math.MaxUint32 {
		r.fail(what)
	}
	return uint32(n)
}

// cacheFile is a roost-cache file whose head is read; decode lays out
// the messages from the records. Anything but a complete, intact format 3
// file whose contents are consistent is an error: the caller then opens
// the mailbox the long way.
type cacheFile struct {
	cs    *cacheState
	sum   backend.Summary
	uids  []byte // n little-endian UIDs, checked
	infos []string
	flags []backend.Flags // of each info part
	kws   [][]string      // of each info part
}

// cacheHeadLen returns the length of the head that a file starts with,
// from its first bytes, or 0.
func cacheHeadLen(start []byte) int {
	if len(start) < len(cacheMagic)+4 || string(start[:len(cacheMagic)]) != cacheMagic {
		return 0
	}
	n := binary.LittleEndian.Uint32(start[len(cacheMagic):])
	if n < uint32(len(cacheMagic)+8) || n > 1<<30 {
		return 0
	}
	return int(n)
}

// parseCache decodes a whole roost-cache file, keeping data: the caller
// must not change it afterwards.
func parseCache(data []byte) (*cacheState, error) {
	n := cacheHeadLen(data)
	if n == 0 || n > len(data) {
		return nil, errors.New("roost-cache: not format 3")
	}
	f, err := parseCacheHead(data[:n])
	if err != nil {
		return nil, err
	}
	if err := f.decode(data[n:]); err != nil {
		return nil, err
	}
	return f.cs, nil
}

// parseCacheHead checks the head's checksum and decodes it: what SELECT
// needs, the UIDs included. The head must be exactly cacheHeadLen bytes.
func parseCacheHead(head []byte) (*cacheFile, error) {
	if cacheHeadLen(head) != len(head) {
		return nil, errors.New("roost-cache: not format 3")
	}
	body := head[:len(head)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(head[len(body):]) {
		return nil, errors.New("roost-cache: checksum mismatch (torn or damaged)")
	}
	r := newCacheReader(body, len(cacheMagic)+4)
	cs := &cacheState{}
	f := &cacheFile{cs: cs}
	// A message takes at least 4 bytes here: no allocation beyond the
	// file's size times a small factor, whatever the file says.
	n := r.count("message count")
	if n > (len(body)-r.off)/4 {
		r.fail("message count")
	}
	for _, id := range []*fileID{&cs.ids.newID, &cs.ids.curID, &cs.ids.ulID, &cs.ids.kwID} {
		id.ok = r.bool("identity")
		id.ino = r.uvarint()
		id.size = r.varint()
		id.mtime = r.varint()
	}
	cs.uidValidity = r.u32("UIDVALIDITY")
	cs.nextUID = r.u32("next UID")
	cs.fileRecs = r.count("record count")
	cs.fileClean = r.bool("uidlist state")
	cs.ulSettled = r.bool("uidlist state")
	cs.ulEnd = r.varint()
	if t := r.str("uidlist tail"); t != "" {
		cs.ulTail = []byte(t) // a copy: readTail and appends build on it
	}
	if cs.uidValidity == 0 || cs.nextUID == 0 || len(cs.ulTail) > tailCheck || cs.ulEnd < int64(len(cs.ulTail)) {
		r.fail("header")
	}
	if n := r.count("header fields"); n > 0 {
		cs.hdrExtra = make([]string, n)
		for i := range cs.hdrExtra {
			f := r.str("header field")
			if fs := strings.Fields(f); len(fs) != 1 || fs[0] != f || f[0] == 'V' || f[0] == 'N' {
				r.fail("header field")
			}
			cs.hdrExtra[i] = f
		}
	}
	for i := range cs.kw {
		k := r.str("keyword")
		if k != "" && (!validKeyword(k) || cs.kw.index(k) >= 0) {
			r.fail("keyword")
		}
		cs.kw[i] = k
	}
	f.infos = make([]string, r.count("info count"))
	f.flags = make([]backend.Flags, len(f.infos))
	f.kws = make([][]string, len(f.infos))
	cs.kwCache = map[uint32][]string{}
	var used uint32
	for i := range f.infos {
		in := r.str("info")
		if in != "" && (in[0] != ':' || strings.ContainsAny(in, "/\r\n")) {
			r.fail("info")
		}
		fl, bits := parseInfo(in)
		f.infos[i], f.flags[i] = in, fl
		if bits != 0 {
			if _, ok := cs.kwCache[bits]; !ok {
				cs.kwCache[bits] = cs.kw.names(bits)
			}
			f.kws[i] = cs.kwCache[bits]
			used |= bits
		}
	}
	if n > cs.fileRecs {
		r.fail("message count")
	}
	f.sum = backend.Summary{Messages: n, Unseen: r.count("unseen"), Deleted: r.count("deleted"), FirstUnseen: r.count("first unseen") - 1}
	if f.sum.Unseen > n || f.sum.Deleted > n || f.sum.FirstUnseen >= n || (f.sum.Unseen == 0) != (f.sum.FirstUnseen < 0) {
		r.fail("summary")
	}
	f.sum.Keywords = cs.kw.names(used) // distinct case-insensitively, checked above
	if r.err == nil && len(body)-r.off != 4*n {
		r.fail("UIDs")
	}
	if r.err != nil {
		return nil, r.err
	}
	f.uids = body[r.off:]
	var prev uint32
	for i := 0; i < len(f.uids); i += 4 {
		uid := binary.LittleEndian.Uint32(f.uids[i:])
		if uid <= prev || uid >= cs.nextUID {
			r.fail("UIDs")
			return nil, r.err
		}
		prev = uid
	}
	if n > 0 {
		f.sum.FirstUID, f.sum.LastUID = backend.UID(binary.LittleEndian.Uint32(f.uids)), backend.UID(prev)
	}
	return f, nil
}

// decode checks the records' checksum and lays out the messages the head
// announced, keeping recs, and checks that they are what its summary
// says.
func (f *cacheFile) decode(recs []byte) error {
	if len(recs) < 4 {
		return errors.New("roost-cache: records missing")
	}
	body := recs[:len(recs)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(recs[len(body):]) {
		return errors.New("roost-cache: records' checksum mismatch (torn or damaged)")
	}
	r, cs := newCacheReader(body, 0), f.cs
	keys := r.str("keys")
	for _, c := range []byte("/\r\n:") { // a vectorised scan each
		if strings.IndexByte(keys, c) >= 0 {
			r.fail("keys") // each key is a valid file name without info part
		}
	}
	n := f.sum.Messages
	if r.err == nil && n > len(body)-r.off {
		r.fail("message count")
	}
	if r.err != nil {
		return r.err
	}
	if len(cs.msgs) != n || len(cs.locs) != n {
		f.alloc()
	}
	cs.ext = map[backend.UID]string{}
	var date int64
	for i := range cs.msgs {
		bits := r.byte()
		size := r.uvarint()
		if bits >= 32 || size > math.MaxInt64 {
			r.fail("message")
		}
		m := &cs.msgs[i]
		m.UID, m.Size = backend.UID(binary.LittleEndian.Uint32(f.uids[4*i:])), int64(size)-1
		if bits&2 == 0 {
			date += r.varint()
			m.InternalDate = time.Unix(date, 0)
		}
		in := r.uvarint()
		if in >= uint64(len(f.infos)) {
			r.fail("info index")
			break
		}
		m.Flags, m.Keywords = f.flags[in], f.kws[in]
		cs.locs[i] = loc{info: f.infos[in], inNew: bits&1 != 0, known: true}
		kl := r.uvarint()
		if kl == 0 || kl > uint64(len(keys)) || keys[0] == '.' {
			r.fail("key")
			break
		}
		m.Key, keys = keys[:kl], keys[kl:]
		if bits&4 != 0 {
			m.UIDL = r.str("UIDL")
			if m.UIDL == "" || strings.ContainsAny(m.UIDL, " \r\n") {
				r.fail("UIDL")
			}
		}
		if bits&8 != 0 {
			ext := r.str("uidlist fields")
			if !validExt(ext) {
				r.fail("uidlist fields")
			}
			cs.ext[m.UID] = ext
		}
		if bits&16 != 0 {
			m.POP3Order = r.u32("POP3 order")
		}
		if r.err != nil {
			break
		}
	}
	if r.err == nil && (r.off != len(r.data) || keys != "") {
		r.fail("end")
	}
	if r.err == nil {
		if sum := backend.Summarize(cs.msgs); sum.Unseen != f.sum.Unseen || sum.Deleted != f.sum.Deleted || sum.FirstUnseen != f.sum.FirstUnseen {
			r.fail("summary")
		}
	}
	if r.err != nil {
		cs.msgs, cs.locs, cs.ext = nil, nil, nil
	}
	return r.err
}

// alloc allocates the message slices that decode fills. Done before the
// records are read, the garbage collector (started by the allocation in a
// new process) scans the zeroed slices while the file is read, instead of
// running with write barriers on while they are filled: 13 instead of
// 16.5 ms for 100,000 messages.
func (f *cacheFile) alloc() {
	f.cs.msgs, f.cs.locs = make([]backend.Message, f.sum.Messages), make([]loc, f.sum.Messages)
}

// placeholders are the messages of a pending snapshot whose records did
// not decode: the right UIDs, nothing else. The mailbox is then opened
// the long way and the next Sync shows what really is there.
func (f *cacheFile) placeholders() []backend.Message {
	msgs := make([]backend.Message, f.sum.Messages)
	for i := range msgs {
		msgs[i] = backend.Message{UID: backend.UID(binary.LittleEndian.Uint32(f.uids[4*i:])), Size: -1}
	}
	return msgs
}

// validExt reports whether fields kept verbatim from a uidlist record
// read back as the same fields: no line end, no empty field, none that
// would be taken for the file name or for a field Roost parses.
func validExt(ext string) bool {
	if ext == "" || strings.ContainsAny(ext, "\r\n") {
		return false
	}
	for f := range strings.SplitSeq(ext, " ") {
		if f == "" {
			return false
		}
		switch f[0] {
		case ':':
			return false
		case 'W':
			if n, err := strconv.ParseInt(f[1:], 10, 64); err == nil && n >= 0 {
				return false
			}
		case 'T':
			if n, err := strconv.ParseInt(f[1:], 10, 64); err == nil && n > 0 {
				return false
			}
		case 'P':
			if len(f) > 1 {
				return false
			}
		}
	}
	return true
}
