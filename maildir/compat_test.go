package maildir

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// Maildirs written by others: Postfix, Courier, cron jobs, admins.

// newMaildir makes an empty Maildir root and returns its path.
func newMaildir(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeFile(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func openRoot(t *testing.T, root string, opts Options) (*Store, backend.User) {
	t.Helper()
	s := newTestStore(t, opts)
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return s, u
}

func syncBox(t *testing.T, u backend.User, name string) (*backend.Snapshot, backend.Mailbox) {
	t.Helper()
	mb, err := u.OpenMailbox(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	s, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, mb
}

func read(t *testing.T, mb backend.Mailbox, uid backend.UID) string {
	t.Helper()
	rc, err := mb.OpenMessage(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func uids(s *backend.Snapshot) []backend.UID {
	var out []backend.UID
	for _, m := range s.Messages() {
		out = append(out, m.UID)
	}
	return out
}

func TestPostfixDelivery(t *testing.T) {
	root := newMaildir(t)
	when := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	body := "Return-Path: <a@example.edu>\nSubject: postfix\n\nline one\nline two\n"
	writeFile(t, filepath.Join(root, "new", "1706933106.V801I1234M567890.mx1"), body, when)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	if len(s.Messages()) != 1 {
		t.Fatalf("%d messages, want 1", len(s.Messages()))
	}
	m := s.Messages()[0]
	want := strings.ReplaceAll(body, "\n", "\r\n")
	// The file is not read to open the mailbox: its size is measured in
	// the background (-1 until then).
	if m.UID != 1 || m.Size != -1 && m.Size != int64(len(want)) || !m.InternalDate.Equal(when) || m.Key != "1706933106.V801I1234M567890.mx1" {
		t.Errorf("message = %+v, want UID 1 size -1 or %d, date %v", m, len(want), when)
	}
	if n, err := mb.MessageSize(context.Background(), 1); err != nil || n != int64(len(want)) {
		t.Errorf("MessageSize = %d, %v, want %d", n, err, len(want))
	}
	if got := read(t, mb, 1); got != want {
		t.Errorf("OpenMessage = %q", got)
	}
	// The measurer caches the CRLF size in the uidlist beside the date: no
	// file reads later.
	s = waitMeasured(t, mb)
	ul, err := os.ReadFile(filepath.Join(root, uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ul), "1 W"+itoa(len(want))+" T"+itoa(int(when.Unix()))+" :1706933106.V801I1234M567890.mx1\n") {
		t.Errorf("uidlist does not cache W and T:\n%s", ul)
	}
	// A second delivery while the mailbox is open is noticed and numbered next.
	writeFile(t, filepath.Join(root, "new", "1706933107.V801I1235M1.mx1"), "Subject: 2\n\nx\n", time.Time{})
	select {
	case <-s.Changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed not closed after an outside delivery")
	}
	s, _ = mb.Sync(context.Background())
	if got := uids(s); len(got) != 2 || got[1] != 2 {
		t.Errorf("UIDs after second delivery %v, want [1 2]", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestOutOfBandRemovalKeepsUIDValidity(t *testing.T) {
	root := newMaildir(t)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	uv := s.UIDValidity
	var keys []string
	for i := 0; i < 3; i++ {
		if _, err := mb.Append(context.Background(), strings.NewReader("Subject: x\n\nbody\n"), backend.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s, _ = mb.Sync(context.Background())
	for _, m := range s.Messages() {
		keys = append(keys, m.Key)
	}
	// A cron job deletes the second message behind Roost's back.
	names, _ := filepath.Glob(filepath.Join(root, "new", keys[1]+"*"))
	if len(names) != 1 {
		t.Fatalf("message file for %s: %v", keys[1], names)
	}
	if err := os.Remove(names[0]); err != nil {
		t.Fatal(err)
	}
	// A fresh process opens the mailbox.
	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s2, mb2 := syncBox(t, u2, "INBOX")
	if s2.UIDValidity != uv {
		t.Errorf("UIDVALIDITY changed from %d to %d after an out-of-band removal", uv, s2.UIDValidity)
	}
	if got := uids(s2); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("UIDs %v, want [1 3]", got)
	}
	r, err := mb2.Append(context.Background(), strings.NewReader("Subject: y\n\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != 4 {
		t.Errorf("next UID %d, want 4", r.UID)
	}
}

func TestCourierImport(t *testing.T) {
	root := newMaildir(t)
	a := "1795628360.M350350P28083V000000000000FE00I0000000000984239.vm,S=19"
	b := "1795628361.M1P28083V000000000000FE00I0000000000984240.vm,S=19"
	writeFile(t, filepath.Join(root, "cur", a+":2,S"), "Subject: a\n\nbody\n", time.Time{})
	writeFile(t, filepath.Join(root, "cur", b+":2,"), "Subject: b\n\nbody\n", time.Time{})
	writeFile(t, filepath.Join(root, "courierimapuiddb"), "1 795628365 7\n2 "+a+"\n5 "+b+"\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, _ := syncBox(t, u, "INBOX")
	if s.UIDValidity != 795628365 || s.UIDNext != 7 {
		t.Errorf("UIDVALIDITY/UIDNEXT %d/%d, want Courier's 795628365/7", s.UIDValidity, s.UIDNext)
	}
	if got := uids(s); len(got) != 2 || got[0] != 2 || got[1] != 5 {
		t.Errorf("UIDs %v, want Courier's [2 5]", got)
	}
	if s.Messages()[0].Flags != backend.FlagSeen {
		t.Errorf("flags %v, want \\Seen", s.Messages()[0].Flags.Names())
	}
	if _, err := os.Stat(filepath.Join(root, uidlistName)); err != nil {
		t.Errorf("dovecot-uidlist not written after import: %v", err)
	}
	// Imported once: later changes to courierimapuiddb are ignored.
	writeFile(t, filepath.Join(root, "courierimapuiddb"), "1 1 1\n", time.Time{})
	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	if s2, _ := syncBox(t, u2, "INBOX"); s2.UIDValidity != 795628365 {
		t.Errorf("second open UIDVALIDITY %d", s2.UIDValidity)
	}
}

func TestUIDLKept(t *testing.T) {
	root := newMaildir(t)
	name := "1700000000.M1P1.host,S=15,W=18"
	writeFile(t, filepath.Join(root, "cur", name+":2,S"), "Subject: a\n\nb\n", time.Unix(1700000000, 0))
	writeFile(t, filepath.Join(root, uidlistName), "3 V1234 N9 Gabc\n8 O3 PUID17-1111 :"+name+"\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	if len(s.Messages()) != 1 || s.Messages()[0].UID != 8 || s.Messages()[0].UIDL != "UID17-1111" || s.Messages()[0].POP3Order != 3 {
		t.Fatalf("messages %+v, want UID 8 with UIDL UID17-1111 and POP3 order 3", s.Messages())
	}
	// The rewrite that added T (first Sync) kept P, O and the header's G;
	// the Append then only appended its record, leaving N behind.
	if _, err := mb.Append(context.Background(), strings.NewReader("Subject: n\n\n"), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	ul, _ := os.ReadFile(filepath.Join(root, uidlistName))
	if !strings.HasPrefix(string(ul), "3 V1234 N9 Gabc\n8 O3 PUID17-1111 ") || !strings.Contains(string(ul), "\n9 ") {
		t.Errorf("uidlist lost fields or the appended record:\n%s", ul)
	}
	if p, warns, err := parseUidlist(ul); err != nil || len(warns) > 0 || p.nextUID != 10 {
		t.Errorf("reparse: %v %v, next UID %v, want 10", err, warns, p)
	}
}

func TestStaleTmpCleaned(t *testing.T) {
	root := newMaildir(t)
	old := filepath.Join(root, "tmp", "1.M1P1.crashed")
	fresh := filepath.Join(root, "tmp", "2.M2P2.writing")
	writeFile(t, old, "partial", time.Now().Add(-37*time.Hour))
	writeFile(t, fresh, "partial", time.Now().Add(-time.Hour))
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	syncBox(t, u, "INBOX")
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("tmp file older than 36 h not removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("recent tmp file removed: %v", err)
	}
}

func TestDuplicateBaseNames(t *testing.T) {
	root := newMaildir(t)
	name := "1700000000.M1P1.host"
	writeFile(t, filepath.Join(root, "new", name), "Subject: in new\n\n", time.Time{})
	writeFile(t, filepath.Join(root, "cur", name+":2,S"), "Subject: in cur\n\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	if len(s.Messages()) != 2 || s.Messages()[0].Key == s.Messages()[1].Key {
		t.Fatalf("messages %+v, want two with distinct keys", s.Messages())
	}
	got := read(t, mb, s.Messages()[0].UID) + read(t, mb, s.Messages()[1].UID)
	if !strings.Contains(got, "in new") || !strings.Contains(got, "in cur") {
		t.Errorf("a duplicate was lost: %q", got)
	}
}

func TestOddEntries(t *testing.T) {
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, "cur", ".nfs0001"), "x", time.Time{})
	writeFile(t, filepath.Join(root, "cur", "1700000000.M1P1.host:2,S"), "Subject: ok\n\n", time.Time{})
	writeFile(t, filepath.Join(root, "cur", "weird name with spaces:2,"), "Subject: odd\n\n", time.Time{})
	if err := os.Mkdir(filepath.Join(root, "cur", "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, ".dovecot.sieve"), "require [];", time.Time{})
	writeFile(t, filepath.Join(root, ".qmail"), "./Maildir/", time.Time{})
	outside := newMaildir(t)
	if err := os.Symlink(outside, filepath.Join(root, ".Escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, ".Real", "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, ".Real"), filepath.Join(root, ".Alias")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, ".bad&mutf7"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	infos, err := u.ListMailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "INBOX,Alias,Real" {
		t.Errorf("mailboxes %v, want INBOX, Alias (symlink inside), Real", names)
	}
	if _, err := u.OpenMailbox(context.Background(), "Escape"); !errors.Is(err, backend.ErrNoSuchMailbox) {
		t.Errorf("OpenMailbox through a symlink out of the Maildir = %v, want ErrNoSuchMailbox", err)
	}
	s, _ := syncBox(t, u, "INBOX")
	if len(s.Messages()) != 2 {
		t.Errorf("%d messages, want 2 (the normal one and the one with spaces)", len(s.Messages()))
	}
}

// TestPollingNoticesChanges: with Poll (NFS), a change made where inotify
// cannot see it is still noticed within PollInterval.
func TestPollingNoticesChanges(t *testing.T) {
	root := newMaildir(t)
	s := newTestStore(t, Options{SpecialUse: map[string]string{}, Poll: true, PollInterval: 50 * time.Millisecond})
	// No inotify at all: as on a file system without it.
	s.noInotify = true
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	snap, _ := syncBox(t, u, "INBOX")
	writeFile(t, filepath.Join(root, "new", "1700000000.V1I1M1.other-host"), "Subject: nfs\n\n", time.Time{})
	select {
	case <-snap.Changed:
	case <-time.After(5 * time.Second):
		t.Fatal("polling did not notice a new file")
	}
}
