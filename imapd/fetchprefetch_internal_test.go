package imapd

import (
	"slices"
	"testing"

	"github.com/roost-mail/roost/backend"
)

// chunkEnds: header loads go by prefetchChunk messages; whole-message
// loads by prefetchTreeChunk, cut earlier by known sizes, so that large
// messages spread over the workers.
func TestChunkEnds(t *testing.T) {
	sized := func(sizes ...int64) []*backend.Message {
		msgs := make([]*backend.Message, len(sizes))
		for i, n := range sizes {
			msgs[i] = &backend.Message{UID: backend.UID(i + 1), Size: n}
		}
		return msgs
	}
	many := func(n int, size int64) []*backend.Message {
		return sized(slices.Repeat([]int64{size}, n)...)
	}
	for _, tc := range []struct {
		name     string
		msgs     []*backend.Message
		needTree bool
		want     []int
	}{
		{"none", nil, false, nil},
		{"one chunk of headers", many(256, 8<<20), false, []int{256}},
		{"headers: sizes do not matter", many(600, 8<<20), false, []int{256, 512, 600}},
		{"trees of small messages", many(20, 4<<10), true, []int{8, 16, 20}},
		{"trees of unknown size", many(20, -1), true, []int{8, 16, 20}},
		{"trees of large messages", many(3, 2<<20), true, []int{1, 2, 3}},
		{"trees, mixed", sized(600<<10, 300<<10, 200<<10, 10, -1, 5<<20, 1), true, []int{3, 6, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chunkEnds(tc.msgs, tc.needTree); !slices.Equal(got, tc.want) {
				t.Errorf("chunkEnds = %v, want %v", got, tc.want)
			}
		})
	}
}
