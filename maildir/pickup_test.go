package maildir

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// listings returns how many full listings mb's mailbox has made.
func listings(mb backend.Mailbox) int {
	st := mb.(*mailbox).st
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.listings
}

func postfixFile(t *testing.T, root, name string) {
	t.Helper()
	writeFile(t, filepath.Join(root, "new", name), "Return-Path: <a@example.edu>\nSubject: "+name+"\n\nbody\n", time.Time{})
}

// threeSeen makes a Maildir with three seen messages in cur/ and opens its
// INBOX.
func threeSeen(t *testing.T) (string, *backend.Snapshot, backend.Mailbox) {
	t.Helper()
	root := newMaildir(t)
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(root, "cur", "170000000"+itoa(i)+".M1P1.host,S=10,W=12:2,S"), "Subject: \n\n", time.Unix(1700000000, 0))
	}
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s0, mb := syncBox(t, u, "INBOX")
	return root, s0, mb
}

// TestPickUpNewFiles: deliveries into new/ are numbered without listing
// cur/; anything else falls back to the full scan and is still right.
func TestPickUpNewFiles(t *testing.T) {
	root, s0, mb := threeSeen(t)
	ctx := context.Background()
	n0 := listings(mb)

	postfixFile(t, root, "1700000100.V801I1M1.mx1")
	postfixFile(t, root, "1700000101.V801I2M2.mx1")
	s1, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := uids(s1); !slices.Equal(got, []backend.UID{1, 2, 3, 4, 5}) {
		t.Fatalf("UIDs %v, want 1..5", got)
	}
	if m := s1.Messages()[3]; m.Key != "1700000100.V801I1M1.mx1" || m.Size != -1 || m.Flags != 0 {
		t.Errorf("picked up %+v, want size -1 (not measured yet)", m)
	}
	if n, err := mb.MessageSize(ctx, 4); err != nil || n != int64(len("Return-Path: <a@example.edu>\nSubject: 1700000100.V801I1M1.mx1\n\nbody\n"))+4 {
		t.Errorf("MessageSize(4) = %d, %v", n, err)
	}
	if n := listings(mb); n != n0 {
		t.Errorf("%d full listings for a delivery into new/, want none", n-n0)
	}
	select {
	case <-s0.Changed:
	default:
		t.Error("the earlier snapshot was not told about the new messages")
	}
	if body := read(t, mb, 5); !strings.Contains(body, "Subject: 1700000101.V801I2M2.mx1\r\n") {
		t.Errorf("UID 5 reads %q", body)
	}
	// The uidlist holds the new records, so another process agrees.
	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	if s2, _ := syncBox(t, u2, "INBOX"); !slices.Equal(uids(s2), uids(s1)) || s2.Messages()[4].Key != s1.Messages()[4].Key {
		t.Errorf("a fresh store sees %v, want %v", uids(s2), uids(s1))
	}

	// A file removed from new/ behind our back: the full scan drops it.
	if err := os.Remove(filepath.Join(root, "new", "1700000100.V801I1M1.mx1")); err != nil {
		t.Fatal(err)
	}
	postfixFile(t, root, "1700000102.V801I3M3.mx1")
	s3, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := uids(s3); !slices.Equal(got, []backend.UID{1, 2, 3, 5, 6}) {
		t.Fatalf("after a removal and a delivery: UIDs %v, want 1 2 3 5 6", got)
	}
	if listings(mb) == n0 {
		t.Error("a file gone from new/ did not cause a full listing")
	}

	// The same base name in new/ and cur/: the copy gets its own UID.
	n1 := listings(mb)
	writeFile(t, filepath.Join(root, "new", "1700000000.M1P1.host,S=10,W=12"), "Subject: \n\n", time.Time{})
	s4, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := uids(s4); !slices.Equal(got, []backend.UID{1, 2, 3, 5, 6, 7}) {
		t.Fatalf("after a duplicate name: UIDs %v, want 1 2 3 5 6 7", got)
	}
	if s4.Messages()[5].Key == s4.Messages()[0].Key {
		t.Error("the duplicate kept its base name")
	}
	if listings(mb) == n1 {
		t.Error("a name listed in cur/ and new/ did not cause a full listing")
	}
}

// TestPickUpOtherWriter: messages another process appended (records in
// dovecot-uidlist) are read from the end of the list and keep the UIDs
// that process gave them; a later flag change there is seen too.
func TestPickUpOtherWriter(t *testing.T) {
	root := newMaildir(t)
	_, u1 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	_, mb1 := syncBox(t, u1, "INBOX")
	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	_, mb2 := syncBox(t, u2, "INBOX")
	ctx := context.Background()
	var want []backend.UID
	for i := 0; i < 3; i++ {
		r, err := mb2.Append(ctx, strings.NewReader("Subject: other "+itoa(i)+"\r\n\r\nx\r\n"), backend.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.UID)
	}
	n0 := listings(mb1)
	s, err := mb1.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids(s), want) {
		t.Fatalf("UIDs %v, want the writer's %v", uids(s), want)
	}
	if listings(mb1) != n0 {
		t.Error("appended records caused a full listing")
	}
	st := mb1.(*mailbox).st
	st.mu.Lock()
	clean, recs := st.fileClean, st.fileRecs
	st.mu.Unlock()
	if !clean || recs != 3 {
		t.Errorf("after the tail read: clean %v, %d records, want true, 3", clean, recs)
	}
	// This process appends next: its record follows the others in the file.
	r, err := mb1.Append(ctx, strings.NewReader("Subject: mine\r\n\r\nx\r\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != want[2]+1 {
		t.Errorf("next UID %d, want %d", r.UID, want[2]+1)
	}
	if _, err := mb2.SetFlags(ctx, want[:1], backend.FlagsAdd, backend.FlagSeen, nil); err != nil {
		t.Fatal(err)
	}
	s, err = mb1.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Messages()) != 4 || s.Messages()[0].Flags != backend.FlagSeen {
		t.Errorf("after the other writer's flag change: %+v", s.Messages())
	}
	data, err := os.ReadFile(filepath.Join(root, uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	if ul, warns, err := parseUidlist(data); err != nil || len(warns) > 0 || len(ul.recs) != 4 {
		t.Errorf("uidlist after both writers: %v %v\n%s", err, warns, data)
	}
}

// TestPickUpPolling: without inotify, new/ alone is listed only when cur/
// had been quiet for a timestamp tick at its last listing.
func TestPickUpPolling(t *testing.T) {
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, "cur", "1700000000.M1P1.host,S=10,W=12:2,S"), "Subject: \n\n", time.Unix(1700000000, 0))
	past := time.Now().Add(-2 * time.Second)
	if err := os.Chtimes(filepath.Join(root, "cur"), past, past); err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s.noInotify = true
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, mb := syncBox(t, u, "INBOX")
	n0 := listings(mb)
	postfixFile(t, root, "1700000100.V801I1M1.mx1")
	snap, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Messages()) != 2 {
		t.Fatalf("%d messages, want 2", len(snap.Messages()))
	}
	if listings(mb) != n0 {
		t.Error("a delivery caused a full listing although cur/ was quiet")
	}
	// A flag change elsewhere within cur/'s tick would not show in its
	// mtime: with cur/ just changed, the next Sync lists everything.
	old := filepath.Join(root, "cur", "1700000000.M1P1.host,S=10,W=12:2,S")
	if err := os.Rename(old, old+"F"); err != nil {
		t.Fatal(err)
	}
	if snap, err = mb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if snap.Messages()[0].Flags != backend.FlagSeen|backend.FlagFlagged {
		t.Errorf("flags %v after a change in cur/", snap.Messages()[0].Flags)
	}
	n1 := listings(mb)
	postfixFile(t, root, "1700000101.V801I2M2.mx1")
	if _, err := mb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if listings(mb) == n1 {
		t.Error("cur/ changed within the last second, yet only new/ was listed")
	}
}

// TestPickUpRewrittenInPlace: a uidlist rewritten under the same inode (a
// tool writing in place, or a new file that got the old inode number) is
// not mistaken for an append: it is read whole.
func TestPickUpRewrittenInPlace(t *testing.T) {
	root, s0, mb := threeSeen(t)
	ulPath := filepath.Join(root, uidlistName)
	data, err := os.ReadFile(ulPath)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, _ := strings.Cut(string(data), "\n")
	// Same records with an extra field each, and a new message as UID 7:
	// longer than before, so only the content shows it is not an append.
	var b strings.Builder
	b.WriteString(hdr + "\n")
	for _, m := range s0.Messages() {
		b.WriteString(itoa(int(m.UID)) + " Xfield :" + m.Key + "\n")
	}
	postfixFile(t, root, "1700000100.V801I1M1.mx1")
	b.WriteString("7 :1700000100.V801I1M1.mx1\n")
	f, err := os.OpenFile(ulPath, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s1, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := uids(s1); !slices.Equal(got, []backend.UID{1, 2, 3, 7}) {
		t.Fatalf("UIDs %v, want 1 2 3 7", got)
	}
}
