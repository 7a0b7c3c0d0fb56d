package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestCorruptStateFiles damages dovecot-uidlist, dovecot-keywords,
// maildirsize and subscriptions while imapd (with a session selected on
// INBOX) and lmtpd run, then makes both use them: a delivery, NOOP and
// FETCH in the open session, a new session, LIST, SUBSCRIBE, STORE of a
// keyword, roostctl quota get. Every time: no daemon dies, the sessions
// answer, the damage is logged, the file is valid again afterwards, and a
// UID never names a different message under an unchanged UIDVALIDITY (a
// message whose record was lost may get a new UID above the old UIDNEXT,
// as Dovecot does). Messages whose records survive keep their UIDs.
func TestCorruptStateFiles(t *testing.T) {
	cases := []struct {
		name, file string
		damage     func(data []byte) []byte
		// minKept of the 4 messages keep their UIDs: those whose records
		// the damage left readable.
		minKept int
	}{
		{"uidlist truncated", "dovecot-uidlist", func([]byte) []byte { return nil }, 0},
		// The header and the records of UIDs 2 and 3 survive.
		{"uidlist cut mid-record", "dovecot-uidlist", func(d []byte) []byte { return d[:len(d)-len(d)/3] }, 2},
		{"uidlist record garbled", "dovecot-uidlist", garbleLine(2), 3},
		{"uidlist binary junk", "dovecot-uidlist", func([]byte) []byte { return junk(300) }, 0},
		{"keywords garbled", "dovecot-keywords", func([]byte) []byte { return []byte("zz \x00\xff\n99 $Over\n0 bad(name\n") }, 4},
		{"maildirsize garbled", "maildirsize", func([]byte) []byte { return []byte("garbage\nnot a number\n\x00\x01\n") }, 4},
		{"maildirsize truncated", "maildirsize", func([]byte) []byte { return nil }, 4},
		{"subscriptions binary junk", "subscriptions", func([]byte) []byte { return junk(200) }, 4},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			corruptOne(t, tc.file, tc.damage, tc.minKept)
		})
	}
}

func junk(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	return b
}

// garbleLine replaces line n (0 = header) with junk.
func garbleLine(n int) func([]byte) []byte {
	return func(d []byte) []byte {
		lines := strings.Split(string(d), "\n")
		if n < len(lines) {
			lines[n] = "x\x01 garbage :::"
		}
		return []byte(strings.Join(lines, "\n"))
	}
}

func corruptOne(t *testing.T, file string, damage func([]byte) []byte, minKept int) {
	s := newSite(t, "", "")
	imapd, lmtpd := s.start("imapd"), s.start("lmtpd")
	deliver := func(id string) {
		t.Helper()
		if r, err := lmtpSend(lmtpd.address(), []string{"alice@example.edu"}, message(id, 1000)); err != nil || !strings.HasPrefix(r[0], "250") {
			t.Fatalf("deliver %s: %q %v", id, r, err)
		}
	}
	for i := 1; i <= 5; i++ {
		deliver(fmt.Sprintf("c%d", i))
	}
	a, err := imapLogin(imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, f := range []string{"Work", "Projects"} {
		if err := a.Create(f, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := a.Subscribe(f).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	sel, err := a.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	// UIDs 2..5 remain, so a renumbering from 1 would reuse UIDs.
	if err := a.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.UIDExpunge(imap.UIDSetNum(1)).Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Store(imap.UIDSetNum(2, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Label1", imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	before, err := uidsByID(a)
	if err != nil {
		t.Fatal(err)
	}
	beforeNext := sel.UIDNext

	path := filepath.Join(s.maildir("alice"), file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	imapdLogAt, lmtpdLogAt := len(imapd.log.String()), len(lmtpd.log.String())
	// Write in place, as a crashed editor or a bad disk would; a new
	// inode number and mtime make sure every reader notices.
	time.Sleep(10 * time.Millisecond)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, damage(data), 0o600); err != nil {
		t.Fatal(err)
	}

	deliver("c6")
	if err := a.Noop().Wait(); err != nil {
		t.Logf("open session after the damage: NOOP: %v", err)
	}
	// Keywords and subscriptions are used, which repairs their files.
	b, err := imapLogin(imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Fatalf("login after the damage: %v", err)
	}
	defer b.Close()
	sel2, err := b.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT after the damage: %v", err)
	}
	after, err := uidsByID(b)
	if err != nil {
		t.Fatalf("FETCH after the damage: %v", err)
	}
	if _, ok := after["c6"]; !ok || len(after) != 5 {
		t.Errorf("after the damage INBOX shows %v, want c2..c6", after)
	}
	if err := b.Store(imap.UIDSetNum(after["c4"]), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Label2"}}, nil).Close(); err != nil {
		t.Errorf("STORE of a keyword after the damage: %v", err)
	}
	if err := b.Subscribe("INBOX").Wait(); err != nil {
		t.Errorf("SUBSCRIBE after the damage: %v", err)
	}
	if _, err := b.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect(); err != nil {
		t.Errorf("LIST (SUBSCRIBED) after the damage: %v", err)
	}
	size, msgs := func() (int64, int64) {
		v, err := scanMaildir(s.maildir("alice"))
		if err != nil {
			t.Fatal(err)
		}
		return v.bytes()
	}()
	if q := s.quotaGet("alice"); q.UsedBytes != size || q.Messages != msgs {
		t.Errorf("after the damage roostctl quota get says %d bytes in %d messages, the files %d in %d", q.UsedBytes, q.Messages, size, msgs)
	}

	// Hard rule: same UIDVALIDITY means same UIDs for the same messages,
	// and new UIDs only above the old UIDNEXT.
	kept := 0
	if sel2.UIDValidity == sel.UIDValidity {
		for id, uid := range after {
			old, had := before[id]
			switch {
			case had && old == uid:
				kept++
			case uid < beforeNext:
				t.Errorf("%s (UID before: %d) now has UID %d, below the old UIDNEXT %d, under the same UIDVALIDITY", id, old, uid, beforeNext)
			}
		}
	}
	t.Logf("%s damaged: UIDVALIDITY %d -> %d, %d of %d UIDs kept", file, sel.UIDValidity, sel2.UIDValidity, kept, len(before))
	if kept < minKept {
		t.Errorf("only %d of %d UIDs kept; the damage left %d readable", kept, len(before), minKept)
	}

	for _, d := range []*daemon{imapd, lmtpd} {
		if !d.alive() {
			t.Fatalf("%s died", d.name)
		}
	}
	// The open session: UIDs cannot change within a session (RFC 3501
	// 2.3.1.1); a server that renumbers must end it instead.
	if err := a.Noop().Wait(); err != nil {
		t.Logf("open session after the damage: %v", err)
	} else if view, err := uidsByID(a); err != nil {
		t.Logf("open session after the damage: FETCH: %v", err)
	} else {
		for id, uid := range view {
			if old, had := before[id]; (had && old != uid && uid < beforeNext) || (!had && uid < beforeNext) {
				t.Errorf("the open session shows %s as UID %d (before: %d, UIDNEXT %d): UIDs changed under a selected mailbox", id, uid, old, beforeNext)
			}
		}
		t.Logf("open session after the damage: %d messages, %v", len(view), view)
	}
	logs := imapd.log.String()[imapdLogAt:] + lmtpd.log.String()[lmtpdLogAt:]
	if !strings.Contains(logs, file) || !strings.Contains(logs, "level=WARN") && !strings.Contains(logs, "level=ERROR") {
		t.Errorf("the damage to %s was not logged; new log lines:\n%s", file, logs)
	}
	checkRepaired(t, s, b, file)
}

// checkRepaired reads the file again after use: it must be well-formed.
func checkRepaired(t *testing.T, s *site, c *imapclient.Client, file string) {
	t.Helper()
	md := s.maildir("alice")
	switch file {
	case "dovecot-uidlist":
		// A new message makes imapd write the list.
		if err := c.Noop().Wait(); err != nil {
			t.Error(err)
		}
		ul, err := readUidlist(md)
		if err != nil || len(ul.dupUIDs) > 0 {
			t.Errorf("dovecot-uidlist not repaired: %v, duplicate UIDs %v", err, ul.dupUIDs)
		}
		v, _ := scanMaildir(md)
		for _, f := range v.files {
			if f.folder == "INBOX" && ul.byName[f.base] == 0 {
				t.Errorf("repaired dovecot-uidlist lacks %s", f.base)
			}
		}
	case "dovecot-keywords":
		data, _ := os.ReadFile(filepath.Join(md, file))
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var idx int
			var name string
			if _, err := fmt.Sscanf(l, "%d %s", &idx, &name); err != nil || idx < 0 || idx > 25 {
				t.Errorf("dovecot-keywords not repaired: line %q in\n%q", l, data)
			}
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4, 5), &imap.FetchOptions{Flags: true}).Collect()
		found := false
		for _, m := range msgs {
			for _, f := range m.Flags {
				found = found || f == "$Label2"
			}
		}
		if err != nil || !found {
			t.Errorf("keyword stored after the damage not shown: %v %v", msgs, err)
		}
	case "maildirsize":
		data, _ := os.ReadFile(filepath.Join(md, file))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for _, l := range lines[1:] {
			var b, n int64
			if _, err := fmt.Sscanf(l, "%d %d", &b, &n); err != nil {
				t.Errorf("maildirsize not repaired: line %q in\n%q", l, data)
			}
		}
		if !strings.HasSuffix(lines[0], "S") && !strings.HasSuffix(lines[0], "C") {
			t.Errorf("maildirsize not repaired: header %q", lines[0])
		}
	case "subscriptions":
		data, _ := os.ReadFile(filepath.Join(md, file))
		// Version 1 (a name per line) or 2 ("V\t2\n\n" first), as Dovecot reads them.
		if strings.ContainsAny(string(data), "\x00\x01\x02\x03\x80") {
			t.Errorf("subscriptions not repaired: %q", data)
		}
		list, err := c.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect()
		var names []string
		for _, l := range list {
			names = append(names, l.Mailbox)
		}
		if err != nil || !strings.Contains(strings.Join(names, " "), "INBOX") {
			t.Errorf("LIST (SUBSCRIBED) after repair: %v %v", names, err)
		}
	}
}

// TestLostUidlistNewUIDValidity loses dovecot-uidlist in the same second
// in which another process created it (imapd appends, lmtpd rebuilds): the
// rebuilt list numbers the files afresh, so its UIDVALIDITY must differ
// from the old one, or clients would take new UIDs for old ones.
func TestLostUidlistNewUIDValidity(t *testing.T) {
	s := newSite(t, "", "")
	imapd, lmtpd := s.start("imapd"), s.start("lmtpd")
	for attempt := 0; attempt < 5; attempt++ {
		// Start just after a second boundary so that all of it fits in one.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
		start := time.Now()
		folder := fmt.Sprintf("Try%d", attempt)
		c, err := imapLogin(imapd.address(), "alice", "alicepw")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Create(folder, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			msg := message(fmt.Sprintf("%s-%d", folder, i), 500)
			cmd := c.Append(folder, int64(len(msg)), nil)
			cmd.Write(msg)
			cmd.Close()
			if _, err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
		}
		sel, err := c.Select(folder, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
		c.UIDExpunge(imap.UIDSetNum(1)).Close()
		before, err := uidsByID(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Logout().Wait()
		c.Close()
		os.Remove(filepath.Join(s.maildir("alice"), "."+folder, "dovecot-uidlist"))
		// lmtpd is the first to read the folder again (alice+Try0 delivers there).
		if r, err := lmtpSend(lmtpd.address(), []string{"alice+" + folder + "@example.edu"}, message(folder+"-new", 500)); err != nil || !strings.HasPrefix(r[0], "250") {
			t.Fatalf("deliver: %q %v", r, err)
		}
		c, err = imapLogin(imapd.address(), "alice", "alicepw")
		if err != nil {
			t.Fatal(err)
		}
		sel2, err := c.Select(folder, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		after, err := uidsByID(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 900*time.Millisecond {
			t.Logf("attempt %d took %v, more than the second it needs; again", attempt, time.Since(start))
			continue
		}
		t.Logf("UIDVALIDITY %d -> %d; UIDs before %v, after %v", sel.UIDValidity, sel2.UIDValidity, before, after)
		if sel.UIDValidity == sel2.UIDValidity {
			for id, uid := range after {
				if old, had := before[id]; (had && old != uid && uid < sel.UIDNext) || (!had && uid < sel.UIDNext) {
					t.Errorf("UIDVALIDITY %d kept, but %s now has UID %d (was %d, UIDNEXT was %d): clients show the wrong messages",
						sel.UIDValidity, id, uid, old, sel.UIDNext)
				}
			}
		}
		return
	}
	t.Fatal("no attempt fitted in one second; the machine is too loaded")
}
