package imapd_test

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

func osStat(p string) (os.FileInfo, error) { return os.Stat(p) }

func ioReadFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

func TestSmoke(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "From: Bob <bob@example.edu>\nTo: alice@example.edu\nSubject: hello\n\nHi Alice\n")
	r := ts.raw(t)
	r.login("alice", alicePass)
	for _, c := range []string{"SELECT INBOX", "FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)", "FETCH 1 BODY[]", "FETCH 1 FLAGS", "LIST \"\" *", "LOGOUT"} {
		lines := r.cmd(c)
		t.Logf("%s:\n%s", c, strings.Join(lines, "\n"))
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func itoa(i int) string { return strconv.Itoa(i) }

func writeFile(t testing.TB, name, s string) {
	if err := os.WriteFile(name, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
