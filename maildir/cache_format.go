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

// roost-cache format 2 (see cache.go for what it is for). Integers are Go
// varints (u: unsigned, s: zigzag), b is a u length then the bytes:
//
//	"roost-cache 2\n", u n messages
//	4 × identity: byte present, u inode, s size, s mtime ns   (new/ cur/ uidlist keywords)
//	u UIDVALIDITY, u next UID, u uidlist records, byte uidlist appendable,
//	byte uidlist settled (quiet for a second), s uidlist length read, b its final bytes
//	u n, n × b uidlist header field (other than V and N)
//	26 × b keyword of letter a..z ("" if none)
//	u n, n × b info part (":2,S", ...)
//	b the messages' keys (base file names) one after another
//	n × message (ascending UID):
//	  byte bits (1 in new/, 2 no date, 4 UIDL, 8 uidlist fields, 16 POP3 order)
//	  u UID - previous UID, u size + 1, [s date - previous date, Unix seconds]
//	  u info index, u key length, [b UIDL], [b other uidlist fields], [u POP3 order]
//	CRC-32C of all the above, 4 bytes little-endian
//
// The keys are one run so that they are checked at memory speed and
// become substrings of one string: no allocation per message.

// encode serialises cs. keywords gives the keyword list of letter bits, to
// check that every message's flags are those of its file name.
func (cs *cacheState) encode(keywords func(uint32) []string) ([]byte, error) {
	if len(cs.locs) != len(cs.msgs) || cs.fileRecs < len(cs.msgs) {
		return nil, errors.New("message list and file state disagree")
	}
	b := make([]byte, 0, 256+len(cs.msgs)*16+len(cs.msgs)*len(firstKey(cs.msgs)))
	b = append(b, cacheMagic...)
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
		b = binary.AppendUvarint(b, uint64(m.UID-prevUID))
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
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
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

// cacheSlices allocates the message slices for the count in head, the
// first bytes of a file of size bytes, if it is plausible.
func cacheSlices(head []byte, size int64) ([]backend.Message, []loc) {
	if len(head) < len(cacheMagic) || string(head[:len(cacheMagic)]) != cacheMagic {
		return nil, nil
	}
	n, w := binary.Uvarint(head[len(cacheMagic):])
	if w <= 0 || n > uint64(size)/6 {
		return nil, nil
	}
	return make([]backend.Message, n), make([]loc, n)
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

// parseCache decodes a roost-cache file, keeping data: the caller must not
// change it afterwards. The messages go into msgs and locs if they have
// the file's message count (readCache's zeroed slices), else into new ones. Anything but a complete, intact
// format 2 file whose contents are consistent is an error: the caller
// then opens the mailbox the long way.
func parseCache(data []byte, msgs []backend.Message, locs []loc) (*cacheState, error) {
	if len(data) < len(cacheMagic)+4 || string(data[:len(cacheMagic)]) != cacheMagic {
		return nil, errors.New("roost-cache: not format 2")
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, errors.New("roost-cache: checksum mismatch (torn or damaged)")
	}
	// The strings share data's memory, which nothing writes after this.
	r := &cacheReader{data: body, s: unsafe.String(unsafe.SliceData(body), len(body)), off: len(cacheMagic)}
	cs := &cacheState{}
	// A message takes at least 6 bytes: no allocation beyond the file's
	// size times a small factor, whatever the file says.
	n := r.count("message count")
	if n > (len(body)-r.off)/6 {
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
	infos := make([]string, r.count("info count"))
	flags := make([]backend.Flags, len(infos))
	kws := make([][]string, len(infos))
	cs.kwCache = map[uint32][]string{}
	for i := range infos {
		in := r.str("info")
		if in != "" && (in[0] != ':' || strings.ContainsAny(in, "/\r\n")) {
			r.fail("info")
		}
		fl, bits := parseInfo(in)
		infos[i], flags[i] = in, fl
		if bits != 0 {
			if _, ok := cs.kwCache[bits]; !ok {
				cs.kwCache[bits] = cs.kw.names(bits)
			}
			kws[i] = cs.kwCache[bits]
		}
	}
	if n > cs.fileRecs {
		r.fail("message count")
	}
	keys := r.str("keys")
	for _, c := range []byte("/\r\n:") { // a vectorised scan each
		if strings.IndexByte(keys, c) >= 0 {
			r.fail("keys") // each key is a valid file name without info part
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	cs.msgs, cs.locs = msgs, locs
	if len(msgs) != n || len(locs) != n {
		cs.msgs, cs.locs = make([]backend.Message, n), make([]loc, n)
	}
	cs.ext = map[backend.UID]string{}
	var uid uint64
	var date int64
	for i := range cs.msgs {
		bits := r.byte()
		d := r.uvarint()
		uid += d
		size := r.uvarint()
		if bits >= 32 || d == 0 || uid >= uint64(cs.nextUID) || size > math.MaxInt64 {
			r.fail("message")
		}
		m := &cs.msgs[i]
		m.UID, m.Size = backend.UID(uid), int64(size)-1
		if bits&2 == 0 {
			date += r.varint()
			m.InternalDate = time.Unix(date, 0)
		}
		in := r.uvarint()
		if in >= uint64(len(infos)) {
			r.fail("info index")
			break
		}
		m.Flags, m.Keywords = flags[in], kws[in]
		cs.locs[i] = loc{info: infos[in], inNew: bits&1 != 0, known: true}
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
	if r.err == nil && (r.off != len(body) || keys != "") {
		r.fail("end")
	}
	if r.err != nil {
		return nil, r.err
	}
	return cs, nil
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
