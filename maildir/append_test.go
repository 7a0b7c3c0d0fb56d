package maildir

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// New records are appended to dovecot-uidlist (its header N then lags);
// every other change replaces the file by rename.

func TestParseUidlistLaggingAndTorn(t *testing.T) {
	for _, c := range []struct {
		in   string
		recs int
		next uint32
		torn bool
	}{
		{"3 V1 N2\n1 :a\n2 :b\n3 :c\n", 3, 4, false},          // N lags behind appended records
		{"3 V1 N10\n1 :a\n2 :b\n", 2, 10, false},              // N above the records (expunged tail)
		{"3 V1 N2\n1 :a\n2 :b\n7 T17", 2, 8, true},            // torn append: UID 7 never reused
		{"3 V1 N2\n1 :a\n2 :b\n3 T1700000000 :c", 2, 4, true}, // complete but unterminated
		{"3 V1 N2\n1 :a\n5 :b\n1", 2, 6, true},                // torn digits below the last UID
		{"3 V1 N2\n1 :a\n2 :b\n ", 2, 3, true},                // nothing readable torn
	} {
		ul, warns, err := parseUidlist([]byte(c.in))
		if err != nil || len(warns) > 0 {
			t.Errorf("%q: %v %v", c.in, err, warns)
			continue
		}
		if len(ul.recs) != c.recs || ul.nextUID != c.next || ul.torn != c.torn {
			t.Errorf("%q: %d records, next %d, torn %v; want %d, %d, %v", c.in, len(ul.recs), ul.nextUID, ul.torn, c.recs, c.next, c.torn)
		}
	}
}

func inodeOf(t *testing.T, p string) uint64 {
	t.Helper()
	id := statID(p)
	if !id.ok {
		t.Fatalf("%s missing", p)
	}
	return id.ino
}

// TestUidlistAppendedRecords: deliveries and new files found by Sync only
// append to the uidlist; Roost and Dovecot read the result the same.
func TestUidlistAppendedRecords(t *testing.T) {
	u, home := openFixture(t, Options{SpecialUse: map[string]string{}, Fsync: true})
	ctx := context.Background()
	in, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Sync(ctx); err != nil { // adds T to Dovecot's records: a rewrite
		t.Fatal(err)
	}
	root := filepath.Join(home, "Maildir")
	ulPath := filepath.Join(root, uidlistName)
	before, err := os.ReadFile(ulPath)
	if err != nil {
		t.Fatal(err)
	}
	ino := inodeOf(t, ulPath)
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	var uids []backend.UID
	for _, o := range []backend.AppendOptions{
		{Flags: backend.FlagSeen, Keywords: []string{"$Roost"}, InternalDate: date},
		{InternalDate: date},
		{Flags: backend.FlagFlagged, InternalDate: date},
	} {
		r, err := in.Append(ctx, strings.NewReader("Subject: appended\n\nbody\n"), o)
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, r.UID)
	}
	if uids[0] != 5 || uids[1] != 6 || uids[2] != 7 {
		t.Errorf("appended UIDs %v, want [5 6 7] after Dovecot's N5", uids)
	}
	// A Postfix delivery picked up by Sync.
	writeFile(t, filepath.Join(root, "new", "1800000000.V801I1M1.mx1"), "Subject: postfix\n\nlf\n", date)
	snap, err := in.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last := snap.Messages()[len(snap.Messages())-1]; last.UID != 8 || last.Key != "1800000000.V801I1M1.mx1" {
		t.Errorf("picked-up message %d %s, want UID 8", last.UID, last.Key)
	}
	after, err := os.ReadFile(ulPath)
	if err != nil {
		t.Fatal(err)
	}
	if inodeOf(t, ulPath) != ino || !bytes.HasPrefix(after, before) {
		t.Fatalf("uidlist was replaced, not appended to:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	added := string(after[len(before):])
	if n := strings.Count(added, "\n"); n != 4 || !strings.HasPrefix(added, "5 ") {
		t.Errorf("appended %d lines, want 4 (UIDs 5-8):\n%s", n, added)
	}
	ul, warns, err := parseUidlist(after)
	if err != nil || len(warns) > 0 || ul.torn || ul.nextUID != 9 {
		t.Fatalf("appended uidlist: %v %v torn %v next %d", err, warns, ul.torn, ul.nextUID)
	}

	mine := roostView(t, u)
	compareViews(t, mine, freshView(t, root), "a second Roost reading the appended uidlist")
	dove := runDovecot(t, home)
	compareViews(t, dove, mine, "Dovecot reading the appended uidlist")
	compareViews(t, dove, freshView(t, root), "Roost after Dovecot")
}

// TestUidlistTornAppend: a writer died part-way through appending a record.
// The torn line is ignored, its UID is not handed out again, and the next
// writer replaces the file instead of appending after the fragment.
func TestUidlistTornAppend(t *testing.T) {
	root := newMaildir(t)
	ctx := context.Background()
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	_, mb := syncBox(t, u, "INBOX")
	for i := 0; i < 2; i++ {
		if _, err := mb.Append(ctx, strings.NewReader("Subject: x\n\ny\n"), backend.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ulPath := filepath.Join(root, uidlistName)
	// The dead writer had moved its file into new/ and written part of
	// "3 T1800000000 :1800000000.M1P1.dead".
	writeFile(t, filepath.Join(root, "new", "1800000000.M1P1.dead"), "Subject: dead\n\nz\n", time.Unix(1800000000, 0))
	f, err := os.OpenFile(ulPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("3 T18000"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ino := inodeOf(t, ulPath)

	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	snap, _ := syncBox(t, u2, "INBOX")
	if got := uids(snap); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 4 {
		t.Fatalf("UIDs %v, want [1 2 4]: the torn record's UID 3 must not be reused", got)
	}
	data, err := os.ReadFile(ulPath)
	if err != nil {
		t.Fatal(err)
	}
	ul, warns, err := parseUidlist(data)
	if err != nil || len(warns) > 0 || ul.torn || len(ul.recs) != 3 {
		t.Fatalf("after repair: %v %v torn %v\n%s", err, warns, ul.torn, data)
	}
	if inodeOf(t, ulPath) == ino {
		t.Errorf("the torn uidlist was appended to, not replaced:\n%s", data)
	}
	// The first process, still open, follows and continues above.
	r, err := mb.Append(ctx, strings.NewReader("Subject: x\n\ny\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != 5 {
		t.Errorf("next append got UID %d, want 5", r.UID)
	}
}

// TestUidlistRemovalRewrites: once a record is dropped (a file removed out
// of band), the next write replaces the list, so that a file restored
// under the old name cannot take its old UID back from a stale record.
func TestUidlistRemovalRewrites(t *testing.T) {
	root := newMaildir(t)
	ctx := context.Background()
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	_, mb := syncBox(t, u, "INBOX")
	for i := 0; i < 3; i++ {
		if _, err := mb.Append(ctx, strings.NewReader("Subject: x\n\ny\n"), backend.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gone := snap.Messages()[1]
	p := filepath.Join(root, "new", gone.Key)
	content, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Append(ctx, strings.NewReader("Subject: x\n\ny\n"), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), gone.Key) {
		t.Fatalf("record of the removed file kept:\n%s", data)
	}
	writeFile(t, p, string(content), time.Time{})
	_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s2, _ := syncBox(t, u2, "INBOX")
	for _, m := range s2.Messages() {
		if m.Key == gone.Key && m.UID == gone.UID {
			t.Errorf("restored file took its old UID %d back", m.UID)
		}
	}
	if got := uids(s2); len(got) != 4 || got[3] != 5 {
		t.Errorf("UIDs %v, want the restored file at UID 5", got)
	}
}
