package imapd_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// startDovecot runs a private Dovecot IMAP server on loopback over its own
// Maildirs, with Roost's defaults where they matter (namespace separator
// "/"), and returns its address. User alice has password alicePass. It
// needs root: Dovecot starts as root and reads mail as nobody.
func startDovecot(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "dovecot", "dovecot-core")
	testenv.Require(t, "/usr/lib/dovecot/imap", "dovecot-imapd")
	if os.Geteuid() != 0 {
		t.Skip("Dovecot needs to start as root")
	}
	dir := t.TempDir()
	// nobody must reach the Maildirs below the test's private directories.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := testenv.FreePort(t)
	users := filepath.Join(dir, "users")
	home := filepath.Join(dir, "alice")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}"+alicePass+":65534:65534::"+home+"::\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`instance_name = roost-test-%[2]d
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
mail_location = maildir:~/Maildir
first_valid_uid = 100
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]d
  }
  inet_listener imaps {
    port = 0
  }
}
`, dir, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr := &testenv.LogBuffer{}
	cmd := exec.Command("dovecot", "-F", "-c", conf)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot did not listen on %s:\n%s\n%s", addr, stderr, log)
		}
	}
}

// TestDovecotParity runs one script against Dovecot 2.3 and Roost, each on
// its own empty Maildir, and compares the status and response code of
// every tagged answer. Where they differ on purpose, the row says what
// each answers; docs/imap.md ("Differences from Dovecot") says why. A
// difference that is not in this table fails the test, and so does a
// documented one that went away.
func TestDovecotParity(t *testing.T) {
	dcAddr := startDovecot(t)
	ts := newTestServer(t, nil)
	dc := (&testServer{addr: dcAddr}).raw(t)
	ro := ts.raw(t)
	msg := "Subject: parity\r\n\r\nbody\r\n"
	appendCmd := fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg)
	for _, r := range []*raw{dc, ro} {
		r.login("alice", alicePass)
		for i := 0; i < 2; i++ {
			if l := last(r.cmd(appendCmd)); !strings.Contains(l, "OK") {
				t.Fatalf("APPEND: %s", l)
			}
		}
	}
	// roost and dovecot are "STATUS [CODE]" of the tagged answer; an
	// empty dovecot means the same as roost.
	for _, tc := range []struct{ cmd, roost, dovecot string }{
		{`CREATE INBOX`, "NO [ALREADYEXISTS]", ""},
		{`CREATE a/b`, "OK", ""},
		{`CREATE a/b`, "NO [ALREADYEXISTS]", ""},
		{`DELETE a`, "NO [HASCHILDREN]", "NO [NONEXISTENT]"}, // Dovecot's a is \Noselect, Roost's a mailbox
		{`DELETE nosuch`, "NO [NONEXISTENT]", ""},
		{`RENAME nosuch x`, "NO [NONEXISTENT]", ""},
		{`RENAME a/b a/b/c`, "NO [CANNOT]", "NO"},
		{`RENAME a/b INBOX`, "NO [ALREADYEXISTS]", ""},
		{`SELECT nosuch`, "NO [NONEXISTENT]", "NO"},
		{`EXAMINE nosuch`, "NO [NONEXISTENT]", "NO"},
		{`STATUS nosuch (MESSAGES)`, "NO [NONEXISTENT]", "NO"},
		{`SUBSCRIBE nosuch`, "NO [NONEXISTENT]", "NO"},
		{`SUBSCRIBE a/b`, "OK", ""},
		{`UNSUBSCRIBE nosuch`, "OK", ""},
		{"APPEND nosuch {1+}\r\nx", "NO [TRYCREATE]", ""},
		{`CREATE a//b`, "NO [CANNOT]", ""},
		{`CREATE ""`, "NO [CANNOT]", ""},
		{`CREATE /x`, "NO [CANNOT]", ""},
		{`CREATE "x*y"`, "NO [CANNOT]", "OK"},
		{`CREATE bad&AOk`, "NO [SERVERBUG]", "NO"},
		{`DELETE INBOX`, "NO [CANNOT]", "NO"},
		{`NAMESPACE`, "OK", ""},
		{`SELECT INBOX`, "OK [READ-WRITE]", ""},
		{`FETCH 9 FLAGS`, "BAD [CLIENTBUG]", "BAD"},
		{`FETCH 0:x FLAGS`, "NO [SERVERBUG]", "BAD"},
		{`SEARCH NOTAKEY`, "NO [SERVERBUG]", "BAD"},
		{`SEARCH CHARSET KOI8-R TEXT x`, "NO [BADCHARSET]", "OK"},
		{"SEARCH " + strings.Repeat("NOT ", 33) + "SEEN", "NO [LIMIT]", "OK"},
		{`SEARCH TEXT parity`, "OK", ""},
		{`COPY 1 nosuch`, "NO [TRYCREATE]", ""},
		{`MOVE 1 nosuch`, "NO [TRYCREATE]", ""},
		{`COPY 1:2 a/b`, "OK [COPYUID]", ""},
		{`STORE 1 +FLAGS (\Recent)`, "OK", "BAD"},
		{`STORE 1 +FLAGS (\Foo)`, "OK", "BAD"},
		{`STORE 1 +FLAGS (\Seen)`, "OK", ""},
		{`UID STORE 99 +FLAGS (\Seen)`, "OK", ""},
		{`EXAMINE INBOX`, "OK [READ-ONLY]", ""},
		{`STORE 1 +FLAGS (\Deleted)`, "NO [READ-ONLY]", "OK"},
		{`EXPUNGE`, "NO [READ-ONLY]", "OK"},
		{`CLOSE`, "OK", ""},
		{`RENAME INBOX Old`, "OK", "NO [CANNOT]"},
	} {
		want := tc.dovecot
		if want == "" {
			want = tc.roost
		}
		if got := statusAndCode(last(ro.cmd(tc.cmd))); got != tc.roost {
			t.Errorf("Roost: %s: got %s, want %s", tc.cmd, got, tc.roost)
		}
		if got := statusAndCode(last(dc.cmd(tc.cmd))); got != want {
			t.Errorf("Dovecot: %s: got %s, want %s", tc.cmd, got, want)
		}
	}
}

var codeArgs = regexp.MustCompile(`^\[([A-Z-]+)[^\]]*\]`)

// statusAndCode reduces a tagged answer to "STATUS [CODE]": the response
// code without its arguments, or the status alone.
func statusAndCode(l string) string {
	f := strings.SplitN(l, " ", 3)
	if len(f) < 2 {
		return l
	}
	if len(f) == 3 {
		if m := codeArgs.FindStringSubmatch(f[2]); m != nil {
			return f[1] + " [" + m[1] + "]"
		}
	}
	return f[1]
}
