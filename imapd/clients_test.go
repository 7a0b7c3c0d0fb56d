package imapd_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/internal/testenv"
)

// TestPythonImaplib runs a real client, Python's imaplib, through every
// common command.
func TestPythonImaplib(t *testing.T) {
	py := testenv.Require(t, "python3", "python3")
	ts := newTestServer(t, nil)
	host, port := splitAddr(t, ts.addr)
	out, err := exec.Command(py, "testdata/imaplib_session.py", host, port, "alice", alicePass).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "done") {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
}

func splitAddr(t *testing.T, addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// TestCurl lists mailboxes and fetches a message with curl's IMAP client.
func TestCurl(t *testing.T) {
	curl := testenv.Require(t, "curl", "curl")
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: for curl\n\nfetched by curl\n")
	base := "imap://" + ts.addr + "/"
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "20", "-u", "alice:" + alicePass}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run(base); !strings.Contains(out, `"/" "Sent"`) || !strings.Contains(out, "INBOX") {
		t.Errorf("curl list:\n%s", out)
	}
	if out := run(base + "INBOX;UID=1"); out != "Subject: for curl\r\n\r\nfetched by curl\r\n" {
		t.Errorf("curl fetch: %q", out)
	}
	if out := run(base+"INBOX", "-X", "SEARCH SUBJECT curl"); !strings.Contains(out, "SEARCH 1") {
		t.Errorf("curl search: %q", out)
	}
}

// TestMbsync syncs a mailbox both ways with isync's mbsync; a second sync
// changes nothing.
func TestMbsync(t *testing.T) {
	mbsync := testenv.Require(t, "mbsync", "isync")
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "From: a@example.org\nSubject: server one\n\nbody one\n")
	ts.deliver(t, "alice", "", "From: a@example.org\nSubject: server two\n\nbody two\n")
	dir := t.TempDir()
	local := filepath.Join(dir, "local")
	host, port := splitAddr(t, ts.addr)
	cfg := fmt.Sprintf(`IMAPAccount roost
Host %s
Port %s
User alice
Pass %s
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account roost

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Sent
Create Both
Expunge Both
SyncState *
`, host, port, alicePass, local, local)
	if err := os.MkdirAll(local, 0o700); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(rc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sync := func() string {
		t.Helper()
		cmd := exec.Command(mbsync, "-c", rc, "-V", "-a")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out)
		}
		return string(out)
	}
	sync()
	files, _ := filepath.Glob(filepath.Join(local, "INBOX", "*", "*"))
	if len(files) != 2 {
		t.Fatalf("local INBOX after first sync: %v", files)
	}
	// A message written locally goes up to the server.
	up := filepath.Join(local, "INBOX", "new", "1700000000.local.host")
	if err := os.WriteFile(up, []byte("From: me@example.edu\nSubject: local one\n\nfrom the laptop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sync()
	state := func() string {
		t.Helper()
		c := ts.login(t, "alice")
		defer c.Logout()
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, m := range msgs {
			fmt.Fprintf(&b, "server %d %v\n", m.UID, m.Flags)
		}
		files, _ := filepath.Glob(filepath.Join(local, "INBOX", "*", "*"))
		for _, f := range files {
			fmt.Fprintf(&b, "local %s\n", strings.TrimPrefix(f, local))
		}
		return b.String()
	}
	before := state()
	if strings.Count(before, "server ") != 3 || strings.Count(before, "local ") != 3 {
		t.Fatalf("after the upload:\n%s", before)
	}
	sync()
	if after := state(); after != before {
		t.Errorf("a second sync changed something:\nbefore\n%s\nafter\n%s", before, after)
	}
}
