package imapd

import "testing"

// FuzzRanges checks the sorted, merged form of a sequence or UID set
// against the set as the client sent it: the same numbers are members.
func FuzzRanges(f *testing.F) {
	f.Add([]byte{1, 3, 7, 5, 2, 2})
	f.Add([]byte{0, 255, 4, 4, 5, 5, 250, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var rs []numRange
		for i := 0; i+1 < len(b) && len(rs) < 64; i += 2 {
			rs = append(rs, numRange{min(uint32(b[i]), uint32(b[i+1])), max(uint32(b[i]), uint32(b[i+1]))})
		}
		orig := append([]numRange(nil), rs...)
		norm := normRanges(rs)
		for i := 1; i < len(norm); i++ {
			if norm[i].lo <= norm[i-1].hi+1 {
				t.Fatalf("not merged: %v", norm)
			}
		}
		for x := uint32(0); x < 260; x++ {
			want := false
			for _, r := range orig {
				if r.lo <= x && x <= r.hi {
					want = true
				}
			}
			if got := inRanges(norm, x); got != want {
				t.Fatalf("%d in %v: got %v, want %v (normalised %v)", x, orig, got, want, norm)
			}
		}
	})
}
