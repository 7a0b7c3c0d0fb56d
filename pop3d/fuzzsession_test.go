package pop3d_test

import (
	"bytes"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

var quitLine = regexp.MustCompile(`(?im)^quit`)

// FuzzSession plays arbitrary client input (one command per line) against
// a real server and store, then hangs up. The server must not panic, must
// answer only in CRLF lines, and must delete nothing unless the client sent
// QUIT.
func FuzzSession(f *testing.F) {
	e := newEnvTB(f, nil)
	e.deliver("alice", msg1, msg2, msg3)
	want := len(e.inbox("alice").Messages())
	f.Fuzz(func(t *testing.T, input string) {
		e.t = t // inputs run one at a time in each process
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write([]byte(strings.ReplaceAll(input, "\n", "\r\n") + "\r\n"))
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading the answers: %v", err)
		}
		if !bytes.HasSuffix(out, []byte("\r\n")) || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
			t.Fatalf("answer not in CRLF lines: %q", out)
		}
		if strings.Contains(e.logs.String(), "panic") {
			t.Fatalf("server panicked on %q:\n%s", input, e.logs)
		}
		if got := len(e.inbox("alice").Messages()); got != want {
			if !quitLine.MatchString(input) {
				t.Fatalf("%d messages left without QUIT (want %d) after %q", got, want, input)
			}
			e.deliver("alice", msg1, msg2, msg3)
			want = len(e.inbox("alice").Messages())
		}
	})
}
