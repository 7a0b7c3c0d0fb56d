package maildir

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/roost-mail/roost/backend"
)

// Fuzz targets for every parser of on-disk data. Seeds live in
// testdata/fuzz/<Target>/ and run with every go test.

func FuzzUidlist(f *testing.F) {
	f.Add([]byte("3 V1795628282 N5 G38460b21fa1c076bab65000083ecc375\n1 :1795628282.M554387P26027.vm,S=294,W=308\n"))
	f.Add([]byte("1 795628365 4\n1 1795628360.M350350P28083.vm,S=76\n"))
	f.Add([]byte("3 V1795628282 N1 G38460b21fa1c076bab65000083ecc375\n1 T1700000000 :a,S=1\n2 W9 :b\n3 T17"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ul, _, err := parseUidlist(data)
		if err != nil {
			return
		}
		var last uint32
		for _, r := range ul.recs {
			if r.uid <= last {
				t.Fatalf("records not ascending: %d after %d", r.uid, last)
			}
			last = r.uid
		}
		if ul.nextUID <= last {
			t.Fatalf("nextUID %d not above %d", ul.nextUID, last)
		}
		// What Roost writes, it reads back the same.
		out := ul.marshal()
		ul2, warns, err := parseUidlist(out)
		if err != nil || len(warns) > 0 {
			t.Fatalf("reparse of %q: %v %v", out, err, warns)
		}
		if !bytes.Equal(ul2.marshal(), out) {
			t.Fatalf("marshal not stable:\n%q\n%q", out, ul2.marshal())
		}
		// Appending the second half of the records to a list holding the
		// first half (header N left behind) reads back as the whole list.
		half := *ul
		half.recs = ul.recs[:len(ul.recs)/2]
		var app bytes.Buffer
		app.Write(half.marshal())
		for i := range ul.recs[len(half.recs):] {
			ul.recs[len(half.recs)+i].appendTo(&app)
		}
		ul3, warns, err := parseUidlist(app.Bytes())
		if err != nil || len(warns) > 0 || ul3.torn {
			t.Fatalf("reparse of appended %q: %v %v", app.Bytes(), err, warns)
		}
		ul3.nextUID = ul2.nextUID
		if !bytes.Equal(ul3.marshal(), out) {
			t.Fatalf("appended list differs:\n%q\n%q", out, ul3.marshal())
		}
	})
}

func FuzzKeywords(f *testing.F) {
	f.Add([]byte("0 $Junk\n1 $Label1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kt, _ := parseKeywords(data)
		kt2, warns := parseKeywords(kt.marshal())
		if kt2 != kt || len(warns) > 0 {
			t.Fatalf("round trip changed %v to %v (%v)", kt, kt2, warns)
		}
	})
}

func FuzzMaildirsize(f *testing.F) {
	f.Add([]byte("262144000S\n882 3\n"))
	f.Add([]byte("10000000S,1000C\n           0            0\n-294 -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := parseMaildirsize(data)
		if err != nil {
			return
		}
		ms2, err := parseMaildirsize([]byte(ms.header() + "\n"))
		if err != nil {
			t.Fatalf("own header %q unreadable: %v", ms.header(), err)
		}
		if ms2.limitBytes != ms.limitBytes || ms2.limitMsgs != ms.limitMsgs {
			t.Fatalf("header %q round trip: %+v vs %+v", ms.header(), ms2, ms)
		}
	})
}

func FuzzSubscriptions(f *testing.F) {
	f.Add([]byte("V\t2\n\nProjects\t2024\nEntw&APw-rfe\n"))
	f.Add([]byte("Projects.2024\nINBOX\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		names, format := parseSubscriptions(data)
		for _, n := range names {
			if _, err := normalizeName(n); err != nil {
				t.Fatalf("parsed an invalid name %q", n)
			}
		}
		again, _ := parseSubscriptions(marshalSubscriptions(append([]string(nil), names...), format))
		if strings.Join(sortedCopy(again), "\n") != strings.Join(sortedCopy(names), "\n") {
			t.Fatalf("round trip %q -> %q", names, again)
		}
	})
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sortStrings(c)
	return c
}

func FuzzFileName(f *testing.F) {
	f.Add("1795628282.M554387P26027.vm,S=294,W=308:2,FSab", uint8(3), uint32(5))
	f.Add("1706933106.V801I1234M567890.mx1", uint8(0), uint32(0))
	f.Add("x:2,PS,extra", uint8(1), uint32(1<<25))
	f.Fuzz(func(t *testing.T, name string, flags uint8, kw uint32) {
		key, info := splitName(name)
		if key+info != name {
			t.Fatal("split lost bytes")
		}
		sizeField(key, 'S')
		sizeField(key, 'W')
		fl := backend.Flags(flags) & allFlags
		kw &= 1<<26 - 1
		ni := makeInfo(info, fl, kw)
		gf, gk := parseInfo(ni)
		if gf != fl || gk != kw {
			t.Fatalf("makeInfo(%q, %v, %b) = %q parses as %v, %b", info, fl, kw, ni, gf, gk)
		}
		if makeInfo(ni, fl, kw) != ni {
			t.Fatalf("makeInfo not idempotent on %q", ni)
		}
	})
}

func FuzzMUTF7(f *testing.F) {
	f.Add("Entwürfe")
	f.Add("&AOQ-&APY-")
	f.Add("日本語 & more")
	f.Fuzz(func(t *testing.T, s string) {
		if utf8.ValidString(s) && !strings.ContainsRune(s, utf8.RuneError) {
			enc := encodeMUTF7(s)
			dec, err := decodeMUTF7(enc)
			if err != nil || dec != s {
				t.Fatalf("encode(%q) = %q decodes to %q, %v", s, enc, dec, err)
			}
		}
		if dec, err := decodeMUTF7(s); err == nil {
			if again, err := decodeMUTF7(encodeMUTF7(dec)); err != nil || again != dec {
				t.Fatalf("decode(%q) = %q does not round-trip: %q %v", s, dec, again, err)
			}
		}
	})
}
