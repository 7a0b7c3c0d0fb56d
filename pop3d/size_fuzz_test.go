package pop3d_test

import (
	"fmt"
	"testing"
)

// FuzzUnmeasuredSizes is a differential fuzz of the POP3 answers that
// carry sizes: for any message (as Postfix would write it, any bytes), a
// server whose store has not measured the sizes answers the login, STAT,
// LIST, RETR and TOP octet for octet as one whose store has. Each input
// starts its own pair of servers.
func FuzzUnmeasuredSizes(f *testing.F) {
	f.Add([]byte("Subject: s\n\n.body\n"), uint8(1))
	f.Add([]byte("no final line end\r"), uint8(0))
	f.Fuzz(func(t *testing.T, msg []byte, lines uint8) {
		known, unknown, _ := unmeasuredPairOf(t, nil, string(msg), "Subject: second\n\nx\n")
		cmds := []string{"STAT", "LIST", "LIST 1", "RETR 1", fmt.Sprintf("TOP 1 %d", lines), "DELE 2", "STAT", "RSET"}
		want := known.session(cmds...)
		if got := unknown.session(cmds...); got != want {
			t.Fatalf("unmeasured sizes answer\n%.2000q\nmeasured sizes answer\n%.2000q", got, want)
		}
	})
}
