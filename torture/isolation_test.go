package torture

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// treeSnapshot lists every path under dir with its type and size, without
// following symlinks; two equal snapshots mean nothing was written there.
func treeSnapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size := fi.Size()
		if d.IsDir() {
			size = 0
		}
		lines = append(lines, fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, dir), fi.Mode().Type(), size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// badNames are mailbox names that must never reach outside the user's
// Maildir or onto its tmp/new/cur.
var badNames = []string{
	"..", "../bob", "../../bob/Maildir", "../bob/Maildir/.Private", "/etc", "/tmp/x",
	"Work/../../bob", "INBOX/../../bob", "a/./b", ".", "./INBOX", ".Private", "..Private",
	"x/..", "foo.bar", "Work//x", "Work/", "*", "%",
}

// rawBadNames are sent on the wire as they are (go-imap's client would
// encode the "&"): modified UTF-7 for "..", "/etc" and "../bob", which an
// IMAP4rev1 client may send and a server must not decode into a path.
var rawBadNames = []string{"&AC4ALg-", "&AC8-etc", "&AC4ALgAv-bob", "Work/&AC4ALg-/&AC4ALg-"}

// rawIMAP sends one tagged command and returns the tagged reply line.
func rawIMAP(tc *textClient, tag, command string) (string, error) {
	if _, err := fmt.Fprintf(tc.c, "%s %s\r\n", tag, command); err != nil {
		return "", err
	}
	for {
		l, err := tc.line()
		if err != nil || strings.HasPrefix(l, tag+" ") {
			return l, err
		}
		if strings.HasPrefix(l, "+") {
			return l, nil
		}
	}
}

// TestIsolation tries to reach another user's mail (or any file outside
// the user's Maildir) through mailbox names and symlinks, over IMAP
// (CREATE, RENAME, SELECT, EXAMINE, STATUS, APPEND, COPY, MOVE, DELETE),
// LMTP +detail, POP3 and roostctl, and checks that bob's Maildir and a
// directory outside every Maildir never change and bob's messages are
// never shown to alice or carol.
func TestIsolation(t *testing.T) {
	s := newSite(t, "", "")
	imapd, pop3d, lmtpd := s.start("imapd"), s.start("pop3d"), s.start("lmtpd")
	deliver := func(rcpt, id string) string {
		t.Helper()
		r, err := lmtpSend(lmtpd.address(), []string{rcpt}, message(id, 600))
		if err != nil {
			t.Fatalf("deliver to %s: %v", rcpt, err)
		}
		return r[0]
	}
	for i := 0; i < 3; i++ {
		deliver("bob@example.edu", fmt.Sprintf("bobsecret%d", i))
		deliver("alice@example.edu", fmt.Sprintf("alicemsg%d", i))
		deliver("carol@example.edu", fmt.Sprintf("carolmsg%d", i))
	}
	bc, err := imapLogin(imapd.address(), "bob", "bobpw")
	if err != nil {
		t.Fatal(err)
	}
	if err := bc.Create("Private", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Copy(imap.SeqSetNum(1, 2), "Private").Wait(); err != nil {
		t.Fatal(err)
	}
	// \Seen moves bob's messages into cur/, where the symlinks below point.
	if err := bc.Store(imap.SeqSetNum(1, 2, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	bc.Logout().Wait()
	bc.Close()
	outside := filepath.Join(s.dir, "outside")
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(outside, sub), 0o700)
	}
	os.WriteFile(filepath.Join(outside, "cur", "1.outside"), message("outsidesecret", 300), 0o600)

	a, err := imapLogin(imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	// Symlink escapes an admin mistake, or a shell user in the system
	// layout, could leave: a folder that is a symlink to bob's folder or
	// to a directory outside, a folder whose cur/ is a symlink to bob's,
	// and carol's own cur/ and new/ pointing at bob's.
	amd, bmd, cmd := s.maildir("alice"), s.maildir("bob"), s.maildir("carol")
	mustSymlink := func(target, link string) {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	mustSymlink(filepath.Join(bmd, ".Private"), filepath.Join(amd, ".Evil"))
	mustSymlink(outside, filepath.Join(amd, ".Outside"))
	os.MkdirAll(filepath.Join(amd, ".Evil2", "new"), 0o700)
	os.MkdirAll(filepath.Join(amd, ".Evil2", "tmp"), 0o700)
	os.WriteFile(filepath.Join(amd, ".Evil2", "maildirfolder"), nil, 0o600)
	mustSymlink(filepath.Join(bmd, "cur"), filepath.Join(amd, ".Evil2", "cur"))
	for _, sub := range []string{"cur", "new"} {
		os.RemoveAll(filepath.Join(cmd, sub))
		mustSymlink(filepath.Join(bmd, sub), filepath.Join(cmd, sub))
	}
	bobBefore, outsideBefore := treeSnapshot(t, bmd), treeSnapshot(t, outside)
	aliceRoot := func() string {
		var b strings.Builder
		for _, sub := range []string{"cur", "new", "tmp"} {
			ents, _ := os.ReadDir(filepath.Join(amd, sub))
			fmt.Fprintf(&b, "%s:%d ", sub, len(ents))
		}
		return b.String()
	}
	aliceRootBefore := aliceRoot()

	if _, err := a.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msg := message("probe", 300)
	appendTo := func(c *imapclient.Client, name string) error {
		cmd := c.Append(name, int64(len(msg)), nil)
		cmd.Write(msg)
		cmd.Close()
		_, err := cmd.Wait()
		return err
	}
	for _, name := range badNames {
		ops := map[string]error{
			"CREATE":           a.Create(name, nil).Wait(),
			"APPEND":           appendTo(a, name),
			"COPY":             func() error { _, err := a.Copy(imap.SeqSetNum(1), name).Wait(); return err }(),
			"STATUS":           func() error { _, err := a.Status(name, &imap.StatusOptions{NumMessages: true}).Wait(); return err }(),
			"RENAME from Work": a.Rename("Work", name, nil).Wait(),
			"RENAME to Moved":  a.Rename(name, "Moved", nil).Wait(),
			"DELETE":           a.Delete(name).Wait(),
			"EXAMINE":          func() error { _, err := a.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait(); return err }(),
			"SELECT":           func() error { _, err := a.Select(name, nil).Wait(); return err }(),
		}
		for op, err := range ops {
			if err == nil {
				t.Errorf("%s %q succeeded", op, name)
			}
		}
		if _, err := a.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("session broken after %q: %v", name, err)
		}
	}
	raw, _, err := dialText(imapd.address())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rawIMAP(raw, "r0", "LOGIN alice alicepw"); err != nil || !strings.Contains(r, "OK") {
		t.Fatalf("raw LOGIN: %q %v", r, err)
	}
	for i, name := range rawBadNames {
		for _, cmd := range []string{"CREATE", "SELECT", "STATUS %q (MESSAGES)", "RENAME Work", "APPEND"} {
			line := cmd + " " + fmt.Sprintf("%q", name)
			switch cmd {
			case "STATUS %q (MESSAGES)":
				line = fmt.Sprintf(cmd, name)
			case "APPEND":
				line = fmt.Sprintf("APPEND %q {%d}", name, len(msg))
			}
			tag := fmt.Sprintf("r%d", i+1)
			r, err := rawIMAP(raw, tag, line)
			if err == nil && strings.HasPrefix(r, "+") {
				// The server asked for the literal: send it.
				raw.c.Write(append(msg, "\r\n"...))
				for err == nil && !strings.HasPrefix(r, tag+" ") {
					r, err = raw.line()
				}
			}
			if err != nil || strings.Contains(r, " OK") {
				t.Errorf("raw %s %q: %q %v", strings.Fields(cmd)[0], name, r, err)
			}
		}
	}
	raw.Close()

	// Names that look like Maildir's own directories are ordinary folders
	// (.tmp, .new, .cur) and never touch the root's tmp/, new/, cur/.
	for _, name := range []string{"tmp", "new", "cur"} {
		if err := a.Create(name, nil).Wait(); err != nil {
			t.Logf("CREATE %s: %v", name, err)
			continue
		}
		if err := appendTo(a, name); err != nil {
			t.Errorf("APPEND to folder %s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(amd, "."+name, "maildirfolder")); err != nil {
			t.Errorf("folder %s is not the Maildir++ directory .%s: %v", name, name, err)
		}
	}
	if got := aliceRoot(); got != aliceRootBefore {
		t.Errorf("alice's root tmp/new/cur changed from %s to %s", aliceRootBefore, got)
	}

	// The symlinked folders: never bob's or outside messages.
	list, err := a.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		t.Logf("alice LIST: %s %v", l.Mailbox, l.Attrs)
	}
	leak := func(who, where string, data []byte) {
		t.Helper()
		for _, secret := range []string{"bobsecret", "outsidesecret"} {
			if strings.Contains(string(data), secret) {
				t.Errorf("%s sees %s through %s", who, secret, where)
			}
		}
	}
	for _, name := range []string{"Evil", "Outside", "Evil2"} {
		if st, err := a.Status(name, &imap.StatusOptions{NumMessages: true}).Wait(); err == nil && st.NumMessages != nil && *st.NumMessages > 0 {
			t.Errorf("STATUS %s shows %d messages (bob's or outside)", name, *st.NumMessages)
		}
		if _, err := a.Select(name, nil).Wait(); err == nil {
			sect := &imap.FetchItemBodySection{Peek: true}
			msgs, _ := a.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
			for _, m := range msgs {
				leak("alice over IMAP", name, m.FindBodySection(sect))
			}
		}
		a.Select("INBOX", nil).Wait()
		appendTo(a, name)
		a.Copy(imap.SeqSetNum(1), name).Wait()
		a.Move(imap.SeqSetNum(1), name).Wait()
		a.Select("INBOX", nil).Wait()
	}
	if err := a.Rename("Evil", "Mine", nil).Wait(); err == nil {
		if _, err := a.Select("Mine", nil).Wait(); err == nil {
			sect := &imap.FetchItemBodySection{Peek: true}
			msgs, _ := a.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
			for _, m := range msgs {
				leak("alice over IMAP", "Evil renamed to Mine", m.FindBodySection(sect))
			}
		}
	}

	// carol, whose cur/ and new/ are symlinks to bob's: IMAP and POP3.
	c, err := imapLogin(imapd.address(), "carol", "carolpw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err == nil {
		sect := &imap.FetchItemBodySection{Peek: true}
		msgs, _ := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
		for _, m := range msgs {
			leak("carol over IMAP", "her symlinked cur/", m.FindBodySection(sect))
		}
	}
	c.Close()
	if p, err := pop3Login(pop3d.address(), "carol", "carolpw"); err == nil {
		for n := 1; n <= 3; n++ {
			if r, err := p.cmd("RETR %d", n); err == nil && strings.HasPrefix(r, "+OK") {
				data, _ := p.multi()
				leak("carol over POP3", "her symlinked cur/", data)
			}
		}
		p.cmd("QUIT")
		p.Close()
	}

	// LMTP +detail: never outside alice's Maildir.
	stored := 0
	for i, detail := range append([]string{"Evil", "Outside", "Evil2", "tmp", "new", "cur"}, badNames...) {
		r := deliver("alice+"+detail+"@example.edu", fmt.Sprintf("detailprobe%d", i))
		switch {
		case strings.HasPrefix(r, "250"):
			stored++
		case !strings.HasPrefix(r, "5"):
			t.Errorf("alice+%s: %q", detail, r)
		}
	}
	// Every accepted probe is in one of alice's own folders.
	v, err := scanMaildir(amd)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range v.files {
		if strings.HasPrefix(f.id, "detailprobe") {
			found++
		}
	}
	if found != stored {
		t.Errorf("%d +detail deliveries accepted, %d found in alice's folders", stored, found)
	}
	deliver("carol@example.edu", "carolnew")

	// roostctl: bad names are refused; symlinked folders show nothing.
	for _, name := range badNames {
		if out, errOut, code := s.roostctl("mailbox", "status", "alice", name, "--json"); code != 1 {
			t.Errorf("roostctl mailbox status alice %q: exit %d, want 1\n%s%s", name, code, out, errOut)
		}
	}
	for _, name := range []string{"Evil", "Outside", "Evil2"} {
		out, errOut, code := s.roostctl("mailbox", "status", "alice", name, "--json")
		if code == 0 && !strings.Contains(out, `"messages": 0`) {
			t.Errorf("roostctl mailbox status alice %q shows another user's messages:\n%s", name, out)
		}
		leak("roostctl", name, []byte(out+errOut))
	}

	if got := treeSnapshot(t, bmd); got != bobBefore {
		t.Errorf("bob's Maildir changed:\nbefore:\n%s\nafter:\n%s", bobBefore, got)
	}
	if got := treeSnapshot(t, outside); got != outsideBefore {
		t.Errorf("the directory outside every Maildir changed:\nbefore:\n%s\nafter:\n%s", outsideBefore, got)
	}
	for _, d := range []*daemon{imapd, pop3d, lmtpd} {
		if !d.alive() {
			t.Errorf("%s died", d.name)
		}
	}
}

// TestLoginNamesStayInMailRoot logs in with user names that are paths,
// with a real user's password, and delivers to them over LMTP: none may
// open or create anyone's Maildir.
func TestLoginNamesStayInMailRoot(t *testing.T) {
	s := newSite(t, "", "")
	imapd, pop3d, lmtpd := s.start("imapd"), s.start("pop3d"), s.start("lmtpd")
	for _, name := range []string{"../alice", "alice/../bob", "bob/../alice", "./alice", "/alice", "alice/", "..", "alice\\..\\bob"} {
		if r, err := lmtpSend(lmtpd.address(), []string{name + "@example.edu"}, message("pathrcpt", 300)); err != nil || strings.HasPrefix(r[0], "250") {
			t.Errorf("LMTP RCPT %s@example.edu: %q %v, want a refusal", name, r, err)
		}
		if c, err := imapLogin(imapd.address(), name, "alicepw"); err == nil {
			t.Errorf("IMAP LOGIN %q with alice's password succeeded", name)
			c.Close()
		}
		if p, err := pop3Login(pop3d.address(), name, "alicepw"); err == nil {
			t.Errorf("POP3 USER %q with alice's password succeeded", name)
			p.Close()
		}
	}
	ents, _ := os.ReadDir(s.root)
	for _, e := range ents {
		t.Errorf("a refused login created %s in the mail root", e.Name())
	}
}
