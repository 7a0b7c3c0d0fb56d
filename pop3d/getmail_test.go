package pop3d_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// TestGetmailDeleteAfter is "leave mail on server for 7 days" as getmail6
// (like Thunderbird) does it: the client remembers when it first saw each
// UIDL and sends DELE once that is 7 days ago. Roost's UIDLs must stay put
// between runs for that to work.
func TestGetmailDeleteAfter(t *testing.T) {
	getmail := testenv.Require(t, "getmail", "getmail6")
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2)
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(e.addr)
	out := filepath.Join(dir, "out")
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(out, sub), 0o700)
	}
	rc := filepath.Join(dir, "getmailrc")
	os.WriteFile(rc, []byte(fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = %s
port = %s
username = alice
password = secret

[destination]
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat > %s/new/m.$$")
allow_root_commands = true

[options]
read_all = false
delete = false
delete_after = 7
`, host, port, out)), 0o600)
	run := func() string {
		t.Helper()
		got, err := command(t, dir, "", getmail, "--getmaildir", dir, "--rcfile", rc)
		if err != nil {
			t.Fatalf("getmail: %v\n%s", err, got)
		}
		return got
	}
	fetched := func() int {
		n, _ := os.ReadDir(filepath.Join(out, "new"))
		return len(n)
	}
	run()
	if fetched() != 2 {
		t.Fatalf("first run fetched %d messages, want 2", fetched())
	}
	e.deliver("alice", msg3)
	run()
	if fetched() != 3 || len(e.inbox("alice").Messages()) != 3 {
		t.Fatalf("second run: %d fetched, %d on the server; want 3 and 3", fetched(), len(e.inbox("alice").Messages()))
	}
	// Ten days pass for the first two messages: getmail's record of when it
	// saw each UIDL is its "oldmail" file (uidl NUL unix-time per line).
	olds, _ := filepath.Glob(filepath.Join(dir, "oldmail-*"))
	if len(olds) != 1 {
		t.Fatalf("oldmail files %v", olds)
	}
	b, err := os.ReadFile(olds[0])
	if err != nil {
		t.Fatal(err)
	}
	first := e.roostUIDL("alice", "secret")[:2]
	old := strconv.FormatInt(time.Now().Add(-10*24*time.Hour).Unix(), 10)
	aged := string(b)
	for _, l := range first {
		uidl := strings.Fields(l)[1]
		aged = regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(uidl)+"\x00[0-9]+$").ReplaceAllString(aged, uidl+"\x00"+old)
	}
	if aged == string(b) {
		t.Fatalf("oldmail does not list Roost's UIDLs %q:\n%q", first, b)
	}
	os.WriteFile(olds[0], []byte(aged), 0o600)
	run()
	left := e.inbox("alice").Messages()
	if len(left) != 1 || fetched() != 3 {
		t.Fatalf("after delete_after: %d left on the server (want 1), %d fetched (want 3)", len(left), fetched())
	}
}
