package imapd_test

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzUnmeasuredSizes is a differential fuzz of the items and keys that
// need sizes: for any message (as Postfix would write it, any bytes) and
// any partial ranges and size bounds, a server whose store has not
// measured the sizes answers FETCH and SEARCH octet for octet as one whose
// store has. Each input starts its own pair of servers (so that both see
// the new message at once), hence a slow fuzz: about 20 inputs a second.
func FuzzUnmeasuredSizes(f *testing.F) {
	f.Add([]byte("Subject: s\n\nbody\n"), uint32(3), uint32(10), uint32(10), uint32(100))
	f.Add([]byte("no header\r\nat all"), uint32(0), uint32(1), uint32(1), uint32(1))
	f.Add([]byte("\n\n\r\r\n.\n"), uint32(5), uint32(1<<20), uint32(0), uint32(7))
	f.Fuzz(func(t *testing.T, msg []byte, off, n, larger, smaller uint32) {
		known, unknown, _ := unmeasuredPairOf(t, nil, mimeMessage, string(msg))
		n = n%(1<<20) + 1 // a partial's length is a non-zero number
		cmds := []string{
			"FETCH 1:* (RFC822.SIZE BODY.PEEK[] BINARY.SIZE[] BODY.PEEK[TEXT])",
			fmt.Sprintf("FETCH 1:* (BODY.PEEK[]<%d.%d> BODY.PEEK[TEXT]<%d.%d> BINARY.PEEK[]<%d.%d>)", off, n, off, n, off, n),
			fmt.Sprintf("SEARCH LARGER %d", larger),
			fmt.Sprintf("SEARCH SMALLER %d", smaller),
			fmt.Sprintf("SEARCH OR LARGER %d NOT SMALLER %d", larger, smaller),
			"FETCH 1:* (FAST ENVELOPE BODY.PEEK[HEADER])",
		}
		rk, ru := known.raw(t), unknown.raw(t)
		for _, r := range []*raw{rk, ru} {
			r.login("alice", alicePass)
			r.cmd("EXAMINE INBOX")
		}
		for _, cmd := range cmds {
			want := strings.Join(rk.cmd(cmd), "\r\n")
			if got := strings.Join(ru.cmd(cmd), "\r\n"); got != want {
				t.Fatalf("%s: unmeasured sizes answer\n%.2000q\nmeasured sizes answer\n%.2000q", cmd, got, want)
			}
		}
	})
}
