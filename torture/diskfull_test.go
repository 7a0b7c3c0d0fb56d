package torture

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// mountTmpfs mounts a tmpfs of size (e.g. "8m") on a fresh directory and
// unmounts it when the test ends (after the daemons, which are stopped by
// cleanups registered later). Without the right to mount, the test fails
// in CI and is skipped elsewhere.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := "cannot mount a tmpfs for the disk-full test (it needs root and CAP_SYS_ADMIN; in a container run it privileged): " +
			err.Error() + ": " + strings.TrimSpace(string(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fill writes a file until the file system says ENOSPC.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// Small writes take the last partial pages.
	for _, err := f.Write([]byte("x")); err == nil; _, err = f.Write([]byte("x")) {
	}
}

// isNo reports whether err is a tagged NO from the server (not BAD, not a
// dropped connection).
func isNo(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo
}

// TestDiskFull puts the mail root on a small tmpfs, fills it, and checks
// that LMTP answers a temporary 4xx and stores nothing, IMAP APPEND gets
// NO, reads go on over IMAP (an open session and a new login) and POP3,
// every daemon stays up, and everything works again once space is freed,
// with maildirsize and dovecot-uidlist matching the files.
func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "8m")
	s := newSite(t, filepath.Join(mnt, "vmail"), "")
	imapd, pop3d, lmtpd := s.start("imapd"), s.start("pop3d"), s.start("lmtpd")
	m := newModel(1)
	for _, id := range []string{"full1", "full2", "full3"} {
		if r, err := lmtpSend(lmtpd.address(), []string{"alice@example.edu"}, message(id, 3000)); err != nil || !strings.HasPrefix(r[0], "250") {
			t.Fatalf("delivery before the disk is full: %q %v", r, err)
		}
		m.set(key{"INBOX", id}, exactlyOne)
	}
	a, err := imapLogin(imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	appendMsg := func(c *imapclient.Client, id string) error {
		msg := message(id, 20000)
		cmd := c.Append("INBOX", int64(len(msg)), nil)
		cmd.Write(msg)
		cmd.Close()
		_, err := cmd.Wait()
		return err
	}
	if err := appendMsg(a, "full4"); err != nil {
		t.Fatal(err)
	}
	m.set(key{"INBOX", "full4"}, exactlyOne)
	if _, err := a.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	before, err := scanMaildir(s.maildir("alice"))
	if err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)

	// Delivery: a temporary failure, so Postfix keeps the message.
	r, err := lmtpSend(lmtpd.address(), []string{"alice@example.edu"}, message("late", 20000))
	if err != nil || !strings.HasPrefix(r[0], "4") {
		t.Errorf("LMTP delivery on a full disk: %q %v, want a 4xx reply", r, err)
	}
	t.Logf("LMTP on a full disk: %q", r)
	// APPEND: NO, and the session goes on.
	err = appendMsg(a, "lateappend")
	if !isNo(err) {
		t.Errorf("APPEND on a full disk: %v, want NO", err)
	}
	t.Logf("APPEND on a full disk: %v", err)
	// COPY may succeed (Roost hard-links, which needs no data blocks) or
	// get NO; either way nothing partial appears.
	if _, err := a.Copy(imap.SeqSetNum(1), "Sent").Wait(); err == nil {
		m.set(key{"Sent", "full1"}, exactlyOne)
		t.Logf("COPY on a full disk: OK")
	} else if !isNo(err) {
		t.Errorf("COPY on a full disk: %v, want OK or NO", err)
	} else {
		t.Logf("COPY on a full disk: %v", err)
	}
	full, err := scanMaildir(s.maildir("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range full.problems {
		t.Errorf("on a full disk: %s", p)
	}
	copied := 0
	if _, ok := m.want[key{"Sent", "full1"}]; ok {
		copied = 1
	}
	if got := full.count(); got[key{"INBOX", "late"}]+got[key{"INBOX", "lateappend"}] != 0 || len(full.files) != len(before.files)+copied {
		t.Errorf("refused messages became visible: %d files before, %d after", len(before.files), len(full.files))
	}
	if full.tmpFiles > before.tmpFiles {
		t.Errorf("refused writes left %d files in tmp/", full.tmpFiles-before.tmpFiles)
	}

	// Reads go on: the open session, a new IMAP login, POP3.
	checkFetch := func(c *imapclient.Client, who string) {
		t.Helper()
		sect := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
		if err != nil || len(msgs) != 4 {
			t.Errorf("%s: FETCH on a full disk: %d messages, %v", who, len(msgs), err)
			return
		}
		for _, msg := range msgs {
			if _, whole := parseMessage(msg.FindBodySection(sect)); !whole {
				t.Errorf("%s: FETCH %d on a full disk returned a partial message", who, msg.SeqNum)
			}
		}
	}
	checkFetch(a, "open session")
	b, err := imapLogin(imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Errorf("IMAP login on a full disk: %v", err)
	} else {
		if _, err := b.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("SELECT on a full disk: %v", err)
		} else {
			checkFetch(b, "new session")
		}
		b.Logout().Wait()
		b.Close()
	}
	if p, err := pop3Login(pop3d.address(), "alice", "alicepw"); err != nil {
		t.Errorf("POP3 login on a full disk: %v", err)
	} else {
		for n := 1; n <= 4; n++ {
			if r, err := p.cmd("RETR %d", n); err != nil || !strings.HasPrefix(r, "+OK") {
				t.Errorf("RETR %d on a full disk: %q %v", n, r, err)
				break
			}
			data, err := p.multi()
			if _, whole := parseMessage(data); err != nil || !whole {
				t.Errorf("RETR %d on a full disk: partial message, %v", n, err)
			}
		}
		if r, err := p.cmd("QUIT"); err != nil || !strings.HasPrefix(r, "+OK") {
			t.Errorf("POP3 QUIT on a full disk: %q %v", r, err)
		}
		p.Close()
	}
	// Cleaning up must work on a full disk: flags are renames, EXPUNGE
	// frees space.
	if err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Errorf("STORE \\Flagged on a full disk: %v", err)
	}
	if err := a.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Errorf("STORE \\Deleted on a full disk: %v", err)
	}
	if err := a.Expunge().Close(); err != nil {
		t.Errorf("EXPUNGE on a full disk: %v", err)
	} else {
		m.set(key{"INBOX", "full2"}, mayBeAbsent)
	}
	for _, d := range []*daemon{imapd, pop3d, lmtpd} {
		if !d.alive() {
			t.Fatalf("%s died on a full disk", d.name)
		}
	}

	// Space comes back: the retried delivery and a new APPEND work.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if r, err := lmtpSend(lmtpd.address(), []string{"alice@example.edu"}, message("late", 20000)); err != nil || !strings.HasPrefix(r[0], "250") {
		t.Errorf("LMTP retry after space was freed: %q %v", r, err)
	}
	m.set(key{"INBOX", "late"}, exactlyOne)
	if err := appendMsg(a, "lateappend"); err != nil {
		t.Errorf("APPEND after space was freed: %v", err)
	}
	m.set(key{"INBOX", "lateappend"}, exactlyOne)
	if err := a.Noop().Wait(); err != nil {
		t.Errorf("NOOP after space was freed: %v", err)
	}
	if n := a.Mailbox().NumMessages; n != 5 {
		t.Errorf("the open session sees %d messages after recovery, want 5", n)
	}
	newVerifier(t, s, imapd, []string{"INBOX", "Sent"}).check(m, 0)
}
