package imapd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/imapd"
)

func TestStoreCopyMoveExpunge(t *testing.T) {
	ts := newTestServer(t, nil)
	for i := 0; i < 5; i++ {
		ts.deliver(t, "alice", "", "Subject: m\n\nbody\n")
	}
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	steps := []struct{ cmd, want string }{
		{`STORE 1 +FLAGS (\Seen $Junk)`, `* 1 FETCH (FLAGS (\Seen $Junk))`},
		{`STORE 1 -FLAGS.SILENT ($Junk)`, "OK STORE"},
		{`FETCH 1 FLAGS`, `* 1 FETCH (FLAGS (\Seen))`},
		{`UID STORE 2 FLAGS ($Forwarded \Flagged MyKeyword)`, `* 2 FETCH (UID 2 FLAGS (\Flagged $Forwarded MyKeyword))`},
		{`STORE 2 -FLAGS (mykeyword)`, `* 2 FETCH (FLAGS (\Flagged $Forwarded))`},
		{`STORE 3:4 +FLAGS (\Deleted \Recent)`, `* 4 FETCH (FLAGS (\Deleted))`},
		{`UID COPY 1:2 Trash`, `OK [COPYUID `},
		{`COPY 1 Nowhere`, `NO [TRYCREATE]`},
		{`UID EXPUNGE 4`, "* 4 EXPUNGE"},
		{`MOVE 1 Archive`, "* 1 EXPUNGE"},
		{`EXPUNGE`, "* 2 EXPUNGE"},
		{`SEARCH ALL`, "* SEARCH 1 2"},
		{`STATUS Trash (MESSAGES)`, `MESSAGES 2`},
		{`STATUS Archive (MESSAGES UNSEEN)`, `MESSAGES 1 UNSEEN 0`},
		{`UNSELECT`, "OK"},
		{`FETCH 1 FLAGS`, "BAD"},
	}
	for _, s := range steps {
		out := strings.Join(r.cmd(s.cmd), "\r\n")
		if !strings.Contains(out, s.want) {
			t.Errorf("%s: want %q in\n%s", s.cmd, s.want, out)
		}
	}
	// MOVE answers COPYUID before its EXPUNGE (RFC 6851 3.3).
	r.cmd("SELECT Trash")
	out := strings.Join(r.cmd("UID MOVE 1:* Archive"), "\n")
	if i, j := strings.Index(out, "* OK [COPYUID"), strings.Index(out, "EXPUNGE"); i < 0 || j < i {
		t.Errorf("MOVE:\n%s", out)
	}
	// Keywords survive on disk: a new session sees them.
	r2 := ts.raw(t)
	r2.login("alice", alicePass)
	if out := strings.Join(r2.cmd("SELECT Archive"), "\n"); !strings.Contains(out, "$Forwarded") {
		t.Errorf("FLAGS after reconnect:\n%s", out)
	}
	// CLOSE expunges silently.
	r2.cmd(`STORE 1:* +FLAGS.SILENT (\Deleted)`)
	if out := strings.Join(r2.cmd("CLOSE"), "\n"); strings.Contains(out, "EXPUNGE") || !strings.Contains(out, "OK") {
		t.Errorf("CLOSE:\n%s", out)
	}
	if out := strings.Join(r2.cmd("STATUS Archive (MESSAGES)"), "\n"); !strings.Contains(out, "MESSAGES 0") {
		t.Errorf("after CLOSE:\n%s", out)
	}
}

func TestAppend(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) { o.AppendLimit = 1000 })
	c := ts.login(t, "alice")
	msg := "From: alice@example.edu\r\nSubject: draft\r\n\r\nhello\r\n"
	date := time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))
	cmd := c.Append("Drafts", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft, "$MDNSent"}, Time: date})
	cmd.Write([]byte(msg))
	cmd.Close()
	data, err := cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if data.UID != 1 || data.UIDValidity == 0 {
		t.Fatalf("APPENDUID: %+v", data)
	}
	if _, err := c.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	m := fetchOne(t, c, 1, &imap.FetchOptions{Flags: true, InternalDate: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	if !m.InternalDate.Equal(date) || m.RFC822Size != int64(len(msg)) || string(m.FindBodySection(&imap.FetchItemBodySection{})) != msg {
		t.Errorf("appended message: date %v size %d", m.InternalDate, m.RFC822Size)
	}
	flags := map[imap.Flag]bool{}
	for _, f := range m.Flags {
		flags[f] = true
	}
	if !flags[imap.FlagDraft] || !flags["$MDNSent"] {
		t.Errorf("flags: %v", m.Flags)
	}
	// APPEND to the selected mailbox shows up at once.
	cmd = c.Append("Drafts", int64(len(msg)), nil)
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Errorf("EXISTS after APPEND: %d", n)
	}

	r := ts.raw(t)
	r.login("alice", alicePass)
	r.send("a APPEND Nowhere {5}\r\n")
	if l := r.line(); strings.HasPrefix(l, "+") {
		r.send("hello\r\n")
		l = r.line()
		if !strings.Contains(l, "NO [TRYCREATE]") {
			t.Errorf("APPEND to a missing mailbox: %s", l)
		}
	}
	r.send("b APPEND INBOX {1001}\r\n")
	if l := r.line(); !strings.Contains(l, "NO [TOOBIG]") {
		t.Errorf("APPEND over APPENDLIMIT: %s", l)
	}
	if caps := r.cmd("CAPABILITY")[0]; !strings.Contains(caps, "APPENDLIMIT=1000") {
		t.Errorf("capabilities: %s", caps)
	}
}

// bob's quota is 2K (passwd-file userdb_quota_rule): an APPEND past it
// gets OVERQUOTA and leaves nothing behind.
func TestAppendOverQuota(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.login(t, "bob")
	big := "Subject: big\r\n\r\n" + strings.Repeat("x", 3000) + "\r\n"
	cmd := c.Append("INBOX", int64(len(big)), nil)
	cmd.Write([]byte(big))
	cmd.Close()
	_, err := cmd.Wait()
	var ie *imap.Error
	if !errorsAs(err, &ie) || ie.Code != imap.ResponseCodeOverQuota {
		t.Fatalf("APPEND over quota: %v", err)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 0 {
		t.Fatalf("messages after refused APPEND: %v %v", st, err)
	}
}

// A COPY past the quota is refused and writes nothing; a MOVE does not
// add to the usage and goes through.
func TestCopyOverQuota(t *testing.T) {
	ts := newTestServer(t, nil)
	msg := "Subject: q\n\n" + strings.Repeat("y", 1200) + "\n"
	ts.deliver(t, "bob", "", msg)
	r := ts.raw(t)
	r.login("bob", bobPass)
	r.cmd("SELECT INBOX")
	if l := last(r.cmd("COPY 1 Archive")); !strings.Contains(l, "NO [OVERQUOTA]") {
		t.Errorf("COPY: %s", l)
	}
	if out := strings.Join(r.cmd("STATUS Archive (MESSAGES)"), "\n"); !strings.Contains(out, "MESSAGES 0") {
		t.Errorf("Archive after the refused copy:\n%s", out)
	}
	if out := strings.Join(r.cmd("MOVE 1 Archive"), "\n"); !strings.Contains(out, "* 1 EXPUNGE") || !strings.Contains(out, "OK") {
		t.Errorf("MOVE within the quota:\n%s", out)
	}
}

// RENAME INBOX moves its messages to the new name and leaves INBOX empty
// (RFC 3501 6.3.5); renaming a parent moves its children.
func TestRenameInbox(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: 1\n\n1\n")
	ts.deliver(t, "alice", "", "Subject: 2\n\n2\n")
	r := ts.raw(t)
	r.login("alice", alicePass)
	if l := last(r.cmd("RENAME INBOX Old")); !strings.Contains(l, "OK") {
		t.Fatal(l)
	}
	if out := strings.Join(r.cmd("STATUS Old (MESSAGES)"), "\n"); !strings.Contains(out, "MESSAGES 2") {
		t.Errorf("Old:\n%s", out)
	}
	if out := strings.Join(r.cmd("STATUS INBOX (MESSAGES)"), "\n"); !strings.Contains(out, "MESSAGES 0") {
		t.Errorf("INBOX:\n%s", out)
	}
	r.cmd("CREATE Old/Sub")
	r.cmd("RENAME Old New")
	if out := strings.Join(r.cmd(`LIST "" New*`), "\n"); !strings.Contains(out, `"New/Sub"`) {
		t.Errorf("children did not move:\n%s", out)
	}
}
