package imapd_test

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkSearch measures SEARCH programs on a 10,000-message INBOX of
// 2 KiB messages over a socket: a key from the cached ENVELOPE, a TEXT key
// that reads every message, a UID set of 5,000 ranges, and twenty flag
// keys under OR.
func BenchmarkSearch(b *testing.B) {
	const n = 10000
	ts := newTestServer(b, nil)
	bigMailbox(b, ts, n, 2<<10)
	r := ts.raw(b)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	var odd []string
	for i := 1; i < n; i += 2 {
		odd = append(odd, fmt.Sprint(i))
	}
	for _, bc := range []struct{ name, cmd, want string }{
		{"From", "UID SEARCH RETURN (COUNT) FROM a7", "COUNT 1111"},
		{"Text", "SEARCH RETURN (COUNT) TEXT nowhere-to-be-found", "COUNT 0"},
		{"UIDSet5000", "UID SEARCH RETURN (COUNT) UID " + strings.Join(odd, ","), "COUNT 5000"},
		{"Or20Flags", "SEARCH RETURN (COUNT) " + strings.Repeat("OR FLAGGED ", 19) + "SEEN", fmt.Sprintf("COUNT %d", n)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if out := strings.Join(r.cmd(bc.cmd), "\n"); !strings.Contains(out, bc.want) {
					b.Fatalf("%s: %.200s", bc.cmd, out)
				}
			}
		})
	}
}
