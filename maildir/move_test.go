package maildir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// MOVE renames the source file into the destination: the rename is the
// claim, so a message moved by several sessions at once ends up exactly
// once, and a failed move puts files back instead of removing them.

const moveQuota = 1 << 30 // a limit, so that maildirsize is kept

func moveAccount(root string) backend.Account {
	return backend.Account{Name: "mover", Maildir: root, QuotaBytes: moveQuota, UID: -1, GID: -1}
}

// moveFixture makes a Maildir with a folder A and n messages in INBOX,
// opened for moving.
func moveFixture(t *testing.T, n int) (string, backend.User) {
	t.Helper()
	root := newMaildir(t)
	u := openMover(t, root)
	if err := u.CreateMailbox(context.Background(), "A", ""); err != nil {
		t.Fatal(err)
	}
	fillInbox(t, u, n)
	return root, u
}

func openMover(t *testing.T, root string) backend.User {
	t.Helper()
	u, err := newTestStore(t, Options{}).Open(context.Background(), moveAccount(root))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// fillInbox delivers n messages with distinct subjects "m-<i>", of
// different sizes, some with flags and keywords.
func fillInbox(t *testing.T, u backend.User, n int) {
	t.Helper()
	ctx := context.Background()
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	for i := 0; i < n; i++ {
		opts := backend.AppendOptions{}
		switch i % 3 {
		case 1:
			opts.Flags = backend.FlagSeen | backend.FlagFlagged
		case 2:
			opts.Keywords = []string{"$Label" + itoa(i%5), "work"}
		}
		body := fmt.Sprintf("Subject: m-%d\n\n%s\n", i, strings.Repeat("x", i*7))
		if _, err := mb.Append(ctx, strings.NewReader(body), opts); err != nil {
			t.Fatal(err)
		}
	}
}

// census opens root in a fresh Store (as a restarted server would) and
// counts each subject over the folders, checking flags and keywords kept.
func census(t *testing.T, root string, n int, folders ...string) {
	t.Helper()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	u, err := s.Open(ctx, moveAccount(root))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	seen := map[string][]string{}
	for _, f := range folders {
		mb, err := u.OpenMailbox(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := mb.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range snap.Messages() {
			rc, err := mb.OpenMessage(ctx, m.UID)
			if err != nil {
				t.Errorf("%s UID %d: %v", f, m.UID, err)
				continue
			}
			buf := make([]byte, 64)
			k, _ := rc.Read(buf)
			rc.Close()
			line, _, _ := strings.Cut(string(buf[:k]), "\r\n")
			subj := strings.TrimPrefix(line, "Subject: ")
			seen[subj] = append(seen[subj], fmt.Sprintf("%s/%d", f, m.UID))
			var i int
			if _, err := fmt.Sscanf(subj, "m-%d", &i); err != nil {
				t.Errorf("%s UID %d: unexpected message %q", f, m.UID, line)
				continue
			}
			wantFlags, wantKw := backend.Flags(0), ""
			switch i % 3 {
			case 1:
				wantFlags = backend.FlagSeen | backend.FlagFlagged
			case 2:
				wantKw = "$Label" + itoa(i%5) + ",work"
			}
			// \Answered is toggled by TestMoveMultiProcess's flagger.
			if m.Flags&^backend.FlagAnswered != wantFlags || strings.Join(m.Keywords, ",") != wantKw {
				t.Errorf("%s: flags %v keywords %v, want %v %q", subj, m.Flags, m.Keywords, wantFlags, wantKw)
			}
			if want := int64(len(fmt.Sprintf("Subject: m-%d\r\n\r\n%s\r\n", i, strings.Repeat("x", i*7)))); m.Size != want {
				t.Errorf("%s: size %d, want %d", subj, m.Size, want)
			}
		}
		mb.Close()
		if tmp, _ := os.ReadDir(filepath.Join(u.(*user).mailboxDir(f), "tmp")); len(tmp) != 0 {
			t.Errorf("%s: %d files left in tmp/", f, len(tmp))
		}
	}
	for i := 0; i < n; i++ {
		if where := seen[fmt.Sprintf("m-%d", i)]; len(where) != 1 {
			t.Errorf("m-%d found %d times: %v", i, len(where), where)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct messages, want %d", len(seen), n)
	}
}

// checkQuotaFile compares the usage maildirsize records (header plus
// deltas, read as is) with a recount of the directories.
func checkQuotaFile(t *testing.T, root string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, maildirsizeName))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := parseMaildirsize(data)
	if err != nil {
		t.Fatalf("maildirsize %q: %v", data, err)
	}
	_, after, err := RecalcQuota(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ms.usedBytes != after.UsedBytes || ms.usedMsgs != after.UsedMessages {
		t.Errorf("maildirsize says %d bytes in %d messages, a recount %d in %d (file %q)",
			ms.usedBytes, ms.usedMsgs, after.UsedBytes, after.UsedMessages, data)
	}
}

// moveCycle is the path every mover takes, through the uncounted Trash.
var moveCycle = [][2]string{{"INBOX", "Trash"}, {"Trash", "A"}, {"A", "INBOX"}}

// moveAll moves every message of from to to and reports what it moved as
// "<from> <uidvalidity> <uid> -> <to> <uidvalidity> <uid>" lines. It fails
// when from holds more than n messages: some were duplicated.
func moveAll(ctx context.Context, u backend.User, from, to string, n int) ([]string, error) {
	mb, err := u.OpenMailbox(ctx, from)
	if err != nil {
		return nil, err
	}
	defer mb.Close()
	snap, err := mb.Sync(ctx)
	if err != nil {
		return nil, err
	}
	if len(snap.Messages()) > n {
		return nil, fmt.Errorf("%s holds %d messages, only %d exist", from, len(snap.Messages()), n)
	}
	res, err := mb.Move(ctx, uids(snap), to)
	if err != nil {
		return nil, err
	}
	if len(res.Source) != len(res.Dest) {
		return nil, fmt.Errorf("move result %+v pairs nothing", res)
	}
	var out []string
	for i, uid := range res.Source {
		out = append(out, fmt.Sprintf("%s %d %d -> %s %d %d", from, snap.UIDValidity, uid, to, res.UIDValidity, res.Dest[i]))
	}
	return out, nil
}

// checkClaims fails if one message instance was moved twice or one
// destination UID given twice.
func checkClaims(t *testing.T, lines []string) {
	t.Helper()
	src, dst := map[string]bool{}, map[string]bool{}
	for _, l := range lines {
		from, to, _ := strings.Cut(l, " -> ")
		if src[from] {
			t.Errorf("%s moved twice", from)
		}
		if dst[to] {
			t.Errorf("%s given twice", to)
		}
		src[from], dst[to] = true, true
	}
}

func TestMoveConcurrentGoroutines(t *testing.T) {
	const n, rounds, perStore = 30, 6, 3
	ctx := context.Background()
	root := newMaildir(t)
	// Two Stores: separate in-memory states, as in two processes.
	stores := []*Store{newTestStore(t, Options{}), newTestStore(t, Options{})}
	var users []backend.User
	for _, s := range stores {
		for i := 0; i < perStore; i++ {
			u, err := s.Open(ctx, moveAccount(root))
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			users = append(users, u)
		}
	}
	if err := users[0].CreateMailbox(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	fillInbox(t, users[0], n)
	var mu sync.Mutex
	var all []string
	var wg sync.WaitGroup
	// Flag changes meanwhile, through one of the Stores.
	var stopped atomic.Bool
	toggled := make(chan error, 1)
	go func() {
		n, err := toggleAnswered(ctx, users[perStore], stopped.Load)
		t.Logf("%d flag changes", n)
		toggled <- err
	}()
	for g, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				for i := range moveCycle {
					step := moveCycle[(i+g)%len(moveCycle)] // movers out of step
					lines, err := moveAll(ctx, u, step[0], step[1], n)
					if err != nil {
						t.Errorf("mover %d: %v", g, err)
						return
					}
					mu.Lock()
					all = append(all, lines...)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	stopped.Store(true)
	if err := <-toggled; err != nil {
		t.Errorf("flag changes: %v", err)
	}
	t.Logf("%d messages moved", len(all))
	if len(all) < n {
		t.Errorf("only %d moves done", len(all))
	}
	checkClaims(t, all)
	census(t, root, n, "INBOX", "A", "Trash")
	checkQuotaFile(t, root)
}

// TestMoveLoserSkips: a session whose snapshot is stale moves a message
// another process moved first: nothing happens, no error, no copy.
func TestMoveLoserSkips(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	u1, u2 := openMover(t, root), openMover(t, root)
	if err := u1.CreateMailbox(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	fillInbox(t, u1, 3)
	s1, mb1 := syncBox(t, u1, "INBOX")
	s2, mb2 := syncBox(t, u2, "INBOX")
	if _, err := mb2.Move(ctx, uids(s2)[:2], "A"); err != nil {
		t.Fatal(err)
	}
	res, err := mb1.Move(ctx, uids(s1), "Trash")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Source) != 1 || res.Source[0] != s1.Messages()[2].UID {
		t.Errorf("stale move = %+v, want only UID %d", res, s1.Messages()[2].UID)
	}
	if s, _ := mb1.Sync(ctx); len(s.Messages()) != 0 {
		t.Errorf("INBOX after both moves: %v", uids(s))
	}
	census(t, root, 3, "INBOX", "A", "Trash")
	checkQuotaFile(t, root)
}

// TestMoveFollowsFlagChange: the file was renamed by a flag change in
// another process after this session's snapshot; Move finds it under its
// base name and carries the new flags.
func TestMoveFollowsFlagChange(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	u1, u2 := openMover(t, root), openMover(t, root)
	mb, err := u1.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	ar, err := mb.Append(ctx, strings.NewReader("Subject: x\n\nbody\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, other := syncBox(t, u2, "INBOX")
	if _, err := other.SetFlags(ctx, []backend.UID{ar.UID}, backend.FlagsAdd, backend.FlagAnswered, []string{"seen-elsewhere"}); err != nil {
		t.Fatal(err)
	}
	res, err := mb.Move(ctx, []backend.UID{ar.UID}, "Archive")
	if err != nil || len(res.Dest) != 1 {
		t.Fatalf("move after a flag change elsewhere = %+v, %v", res, err)
	}
	ds, _ := syncBox(t, u1, "Archive")
	if len(ds.Messages()) != 1 || ds.Messages()[0].Flags != backend.FlagAnswered || strings.Join(ds.Messages()[0].Keywords, ",") != "seen-elsewhere" {
		t.Errorf("Archive holds %+v, want the message with \\Answered and seen-elsewhere", ds.Messages())
	}
	if ss, _ := mb.Sync(ctx); len(ss.Messages()) != 0 {
		t.Errorf("INBOX still holds %v", uids(ss))
	}
}

// listFiles returns the names in a mailbox's new/ and cur/.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		names, _ := readNames(filepath.Join(dir, sub))
		for _, n := range names {
			out = append(out, sub+"/"+n)
		}
	}
	return out
}

// TestMoveFailurePutsBack: when a move fails after some files were
// renamed into the destination, they go back to exactly where they were.
func TestMoveFailurePutsBack(t *testing.T) {
	for _, tc := range []struct {
		name      string
		secondKw  []string // the second message goes to cur/ with them, else new/
		breakDest func(t *testing.T, u backend.User, dir string)
	}{
		// The second message needs a 27th keyword in the destination.
		{"keywords full", []string{"extra"}, func(t *testing.T, u backend.User, dir string) {
			var kws []string
			for i := 0; i < 26; i++ {
				kws = append(kws, "k"+itoa(i))
			}
			mb, err := u.OpenMailbox(context.Background(), "A")
			if err != nil {
				t.Fatal(err)
			}
			defer mb.Close()
			if _, err := mb.Append(context.Background(), strings.NewReader("Subject: full\n\n"), backend.AppendOptions{Keywords: kws}); err != nil {
				t.Fatal(err)
			}
		}},
		// The second message goes to new/, which is gone: that ENOENT is
		// the destination's, not a sign that someone took the message.
		{"new/ missing", nil, func(t *testing.T, u backend.User, dir string) {
			if err := os.Remove(filepath.Join(dir, "new")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := newMaildir(t)
			u := openMover(t, root)
			if err := u.CreateMailbox(ctx, "A", ""); err != nil {
				t.Fatal(err)
			}
			in, err := u.OpenMailbox(ctx, "INBOX")
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			first, err := in.Append(ctx, strings.NewReader("Subject: one\n\n1\n"), backend.AppendOptions{Flags: backend.FlagFlagged})
			if err != nil {
				t.Fatal(err)
			}
			second, err := in.Append(ctx, strings.NewReader("Subject: two\n\n2\n"), backend.AppendOptions{Keywords: tc.secondKw})
			if err != nil {
				t.Fatal(err)
			}
			before := listFiles(t, root)
			beforeSnap, _ := in.Sync(ctx)
			dir := filepath.Join(root, ".A")
			tc.breakDest(t, u, dir)
			destBefore := listFiles(t, dir)
			q0, _ := u.Quota(ctx)

			res, err := in.Move(ctx, []backend.UID{first.UID, second.UID}, "A")
			if err == nil {
				t.Fatalf("move = %+v, want an error", res)
			}
			t.Logf("move failed as expected: %v", err)
			if got := listFiles(t, root); strings.Join(got, " ") != strings.Join(before, " ") {
				t.Errorf("INBOX files after the failed move %v, want %v", got, before)
			}
			if got := listFiles(t, dir); strings.Join(got, " ") != strings.Join(destBefore, " ") {
				t.Errorf("A files after the failed move %v, want %v", got, destBefore)
			}
			snap, err := in.Sync(ctx)
			if err != nil || fmt.Sprint(uids(snap)) != fmt.Sprint(uids(beforeSnap)) {
				t.Errorf("INBOX UIDs after the failed move %v (%v), want %v", uids(snap), err, uids(beforeSnap))
			}
			if q, _ := u.Quota(ctx); q != q0 {
				t.Errorf("quota %+v after the failed move, was %+v", q, q0)
			}
			checkQuotaFile(t, root)
		})
	}
}

// TestMoveQuota: between counted folders nothing changes; into the
// uncounted Trash usage drops; out of it usage grows and is checked.
func TestMoveQuota(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	u := openMover(t, root)
	if err := u.CreateMailbox(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	fillInbox(t, u, 6)
	q := func() backend.Quota {
		t.Helper()
		q, err := u.Quota(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	full := q()
	if full.UsedMessages != 6 {
		t.Fatalf("quota after 6 appends: %+v", full)
	}
	if _, err := moveAll(ctx, u, "INBOX", "A", 6); err != nil {
		t.Fatal(err)
	}
	if got := q(); got != full {
		t.Errorf("quota after INBOX -> A %+v, want %+v", got, full)
	}
	if _, err := moveAll(ctx, u, "A", "Trash", 6); err != nil {
		t.Fatal(err)
	}
	if got := q(); got.UsedBytes != 0 || got.UsedMessages != 0 {
		t.Errorf("quota after A -> Trash %+v, want nothing used", got)
	}
	checkQuotaFile(t, root)
	u.(*user).acct.QuotaBytes = full.UsedBytes - 1
	if _, err := moveAll(ctx, u, "Trash", "INBOX", 6); !errors.Is(err, backend.ErrOverQuota) {
		t.Errorf("Trash -> INBOX over quota = %v, want ErrOverQuota", err)
	}
	u.(*user).acct.QuotaBytes = moveQuota
	if _, err := moveAll(ctx, u, "Trash", "INBOX", 6); err != nil {
		t.Fatal(err)
	}
	if got := q(); got.UsedBytes != full.UsedBytes || got.UsedMessages != 6 {
		t.Errorf("quota after Trash -> INBOX %+v, want %+v", got, full)
	}
	checkQuotaFile(t, root)
	// Within one mailbox: new UIDs, one copy each.
	if _, err := moveAll(ctx, u, "INBOX", "INBOX", 6); err != nil {
		t.Fatal(err)
	}
	census(t, root, 6, "INBOX", "A", "Trash")
	checkQuotaFile(t, root)
}

// TestMoveNoListing: after a move, the source's and the destination's
// next Sync build their snapshots from memory (the own renames are
// expected inotify events), as after EXPUNGE and APPEND.
func TestMoveNoListing(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	u := openMover(t, root)
	fillInbox(t, u, 4)
	snap, in := syncBox(t, u, "INBOX")
	_, trash := syncBox(t, u, "Trash")
	if !in.(*mailbox).st.watched.Load() {
		t.Skip("no inotify here: every Sync after a change lists")
	}
	n0, t0 := listings(in), listings(trash)
	res, err := in.Move(ctx, uids(snap)[1:3], "Trash")
	if err != nil || len(res.Dest) != 2 {
		t.Fatalf("move = %+v, %v", res, err)
	}
	s1, err := in.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := trash.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(uids(s1)) != fmt.Sprint([]backend.UID{snap.Messages()[0].UID, snap.Messages()[3].UID}) ||
		fmt.Sprint(uids(ts)) != fmt.Sprint(res.Dest) {
		t.Fatalf("after the move INBOX %v, Trash %v (moved to %v)", uids(s1), uids(ts), res.Dest)
	}
	if n, m := listings(in)-n0, listings(trash)-t0; n != 0 || m != 0 {
		t.Errorf("%d listings of INBOX and %d of Trash after a move, want none", n, m)
	}
}

// TestMovePostfixFile: a file Postfix left in new/ (LF, no ",S=") moves
// under a Dovecot-style name with its sizes, date and content.
func TestMovePostfixFile(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	body := "Subject: m-0\n\n\n"
	date := time.Unix(1700000000, 0)
	writeFile(t, filepath.Join(root, "new", "1700000000.V801I1M1.mx1"), body, date)
	u := openMover(t, root)
	if err := u.CreateMailbox(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	snap, in := syncBox(t, u, "INBOX")
	q0, _ := u.Quota(ctx)
	res, err := in.Move(ctx, uids(snap), "A")
	if err != nil || len(res.Dest) != 1 {
		t.Fatalf("move = %+v, %v", res, err)
	}
	ds, a := syncBox(t, u, "A")
	m := ds.Messages()[0]
	if want := fmt.Sprintf(",S=%d,W=%d", len(body), len(body)+3); !strings.HasSuffix(m.Key, want) || m.Size != int64(len(body)+3) || !m.InternalDate.Equal(date) {
		t.Errorf("moved message %+v, want a key ending %s and the date %v", m, want, date)
	}
	if got := read(t, a, m.UID); got != strings.ReplaceAll(body, "\n", "\r\n") {
		t.Errorf("moved message reads %q", got)
	}
	if q, _ := u.Quota(ctx); q != q0 {
		t.Errorf("quota %+v after a move between counted folders, was %+v", q, q0)
	}
	census(t, root, 1, "INBOX", "A")
}
