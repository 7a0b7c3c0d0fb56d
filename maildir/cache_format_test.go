package maildir

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// checkCacheState fails unless cs is internally consistent: ascending
// UIDs below the next UID, valid names, flags that are the file names',
// fields that write back into a uidlist as they are.
func checkCacheState(t *testing.T, cs *cacheState) {
	t.Helper()
	if cs.uidValidity == 0 || cs.nextUID == 0 || len(cs.msgs) != len(cs.locs) || cs.fileRecs < len(cs.msgs) {
		t.Fatalf("bad header %+v", cs)
	}
	var last backend.UID
	for i, m := range cs.msgs {
		lc := cs.locs[i]
		if m.UID <= last || uint32(m.UID) >= cs.nextUID {
			t.Fatalf("UID %d after %d, next %d", m.UID, last, cs.nextUID)
		}
		last = m.UID
		if k, in := splitName(m.Key + lc.info); !validFileName(m.Key+lc.info) || k != m.Key || in != lc.info || !lc.known {
			t.Fatalf("bad name %q + %q", m.Key, lc.info)
		}
		fl, kw := parseInfo(lc.info)
		if fl != m.Flags || !reflect.DeepEqual(cs.kw.names(kw), m.Keywords) || m.Size < -1 {
			t.Fatalf("message %+v does not match its name", m)
		}
		r := ulRec{uid: uint32(m.UID), key: m.Key, vsize: m.Size, uidl: m.UIDL, ext: cs.ext[m.UID]}
		var b bytes.Buffer
		r.appendTo(&b)
		back, err := parseUidlistRec(strings.TrimSuffix(b.String(), "\n"), 3)
		if err != nil || back.ext != r.ext || back.uidl != r.uidl || back.key != r.key {
			t.Fatalf("record %q reads back as %+v, %v", b.String(), back, err)
		}
	}
	for _, f := range cs.hdrExtra {
		ul, _, err := parseUidlist([]byte("3 V1 N1 " + f + "\n"))
		if err != nil || len(ul.hdrExtra) != 1 || ul.hdrExtra[0] != f {
			t.Fatalf("header field %q does not read back", f)
		}
	}
}

func sampleCache() []byte {
	msgs := []backend.Message{
		{UID: 1, Key: "1700000000.M1P1.host,S=10,W=12", Flags: backend.FlagSeen, InternalDate: time.Unix(1700000000, 0), Size: 12},
		{UID: 3, Key: "1700000001.M2P1.host", Flags: backend.FlagFlagged, Keywords: []string{"$Junk"}, InternalDate: time.Unix(1699999000, 0), Size: -1, UIDL: "abc", POP3Order: 2},
		{UID: 9, Key: "1700000002.M3P1.host", Size: -1},
	}
	locs := []loc{{info: ":2,S", known: true}, {info: ":2,Fa", known: true}, {inNew: true, known: true}}
	cs := &cacheState{ids: cacheIDs{newID: fileID{ino: 5, mtime: 1e18, ok: true}}, uidValidity: 1700000000, nextUID: 10,
		fileRecs: 4, fileClean: true, ulEnd: 200, ulTail: []byte("9 :1700000002.M3P1.host\n"),
		hdrExtra: []string{"G0123456789abcdef0123456789abcdef"}, kw: keywordTable{"$Junk"},
		msgs: msgs, locs: locs, ext: map[backend.UID]string{3: "S99 O2"}}
	b, err := cs.encode(func(bits uint32) []string { return cs.kw.names(bits) })
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzCacheLoad(f *testing.F) {
	f.Add(sampleCache())
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(data []byte) {
			n := cacheHeadLen(data)
			if n == 0 || n > len(data) {
				return
			}
			f, err := parseCacheHead(data[:n])
			if err != nil {
				return
			}
			// A pending snapshot gets these if the records do not decode.
			ph := f.placeholders()
			if len(ph) != f.sum.Messages || len(ph) > 0 && (ph[0].UID != f.sum.FirstUID || ph[len(ph)-1].UID != f.sum.LastUID) {
				t.Fatalf("placeholders disagree with the summary %+v", f.sum)
			}
			if err := f.decode(data[n:]); err == nil {
				checkLoaded(t, f.cs)
			}
		}
		check(bytes.Clone(data))
		// With its checksums made right, so that the fuzzer reaches the
		// decoders behind them.
		if n := cacheHeadLen(data); n >= len(cacheMagic)+8 && n+4 <= len(data) {
			fixed := bytes.Clone(data)
			binary.LittleEndian.PutUint32(fixed[n-4:], crc32.Checksum(fixed[:n-4], castagnoli))
			binary.LittleEndian.PutUint32(fixed[len(fixed)-4:], crc32.Checksum(fixed[n:len(fixed)-4], castagnoli))
			check(fixed)
		}
	})
}

// checkLoaded fails unless a loaded cache is consistent and reads back
// the same after being written again.
func checkLoaded(t *testing.T, cs *cacheState) {
	t.Helper()
	{
		checkCacheState(t, cs)
		// What loads, writes back and loads the same.
		again, err := cs.encode(func(bits uint32) []string { return cs.kwCache[bits] })
		if err != nil {
			t.Fatalf("loaded state does not encode: %v", err)
		}
		cs2, err := parseCache(again)
		if err != nil {
			t.Fatalf("re-encoded cache rejected: %v", err)
		}
		cs.kwCache, cs2.kwCache = nil, nil
		if !reflect.DeepEqual(cs, cs2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", cs, cs2)
		}
	}
}

// BenchmarkCacheParse100k: decoding a 100,000-message roost-cache held in
// memory (no file, no state), the CPU part of a cold open.
func BenchmarkCacheParse100k(b *testing.B) {
	const n = 100000
	cs := &cacheState{uidValidity: 1700000000, nextUID: n + 1, fileRecs: n, fileClean: true,
		ulEnd: 1, ulTail: []byte("\n"), hdrExtra: []string{"G0123456789abcdef0123456789abcdef"}, kw: keywordTable{"$Junk"}}
	for i := 0; i < n; i++ {
		info := ":2,S"
		if i%10 == 0 {
			info = ":2,Sa"
		}
		fl, kw := parseInfo(info)
		cs.msgs = append(cs.msgs, backend.Message{UID: backend.UID(i + 1), Key: fmt.Sprintf("%d.M%dP%d.bench.example.edu,S=%d,W=%d", 1700000000+i/100, i, 1000+i%50, 2000+i%5000, 2050+i%5000),
			Flags: fl, Keywords: cs.kw.names(kw), InternalDate: time.Unix(int64(1700000000+i*7), 0), Size: int64(2050 + i%5000)})
		cs.locs = append(cs.locs, loc{info: info, known: true})
	}
	data, err := cs.encode(func(bits uint32) []string { return cs.kw.names(bits) })
	if err != nil {
		b.Fatal(err)
	}
	b.Run("header", func(b *testing.B) { // what SELECT waits for
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := parseCacheHead(data[:cacheHeadLen(data)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := parseCache(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
