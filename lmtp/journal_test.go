package lmtp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/quota"
)

func newDelivery(t *testing.T) (Delivery, backend.Mailbox) {
	t.Helper()
	ctx := context.Background()
	acct := backend.Account{Name: "alice", Maildir: filepath.Join(t.TempDir(), "Maildir"), UID: -1, GID: -1}
	u, err := maildir.New(maildir.Options{}).Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close(); u.Close() })
	p, err := quota.New(quota.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Delivery{Policy: p, User: u, Account: acct}, mb
}

func count(t *testing.T, mb backend.Mailbox) int {
	t.Helper()
	snap, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(snap.Messages())
}

// A retry of a delivery that completed (the reply was lost) is answered
// with the first UID and stores nothing.
func TestJournalRetryAfterDone(t *testing.T) {
	ctx := context.Background()
	d, mb := newDelivery(t)
	body := strings.NewReader("Subject: one\r\n\r\nbody\r\n")
	first, _, dup, err := d.Store(ctx, "Delivered-To: alice\r\n", body, body.Size())
	if err != nil || dup {
		t.Fatalf("first delivery: %v dup=%v", err, dup)
	}
	again, folder, dup, err := d.Store(ctx, "Delivered-To: alice\r\n", body, body.Size())
	if err != nil || !dup || again.UID != first.UID || folder != "INBOX" {
		t.Fatalf("retry: UID %d in %s dup=%v err=%v; want dup of UID %d", again.UID, folder, dup, err, first.UID)
	}
	other := strings.NewReader("Subject: two\r\n\r\nbody\r\n")
	if _, _, dup, err := d.Store(ctx, "Delivered-To: alice\r\n", other, other.Size()); err != nil || dup {
		t.Fatalf("different message: dup=%v err=%v", dup, err)
	}
	if n := count(t, mb); n != 2 {
		t.Errorf("%d messages stored, want 2", n)
	}
}

// A process that died after storing but before recording "done" left only
// the pending record: the retry finds the stored copy instead of storing
// it again. One that died before storing: the retry stores it.
func TestJournalRetryAfterCrash(t *testing.T) {
	ctx := context.Background()
	d, mb := newDelivery(t)
	msg := "Delivered-To: alice\r\nSubject: crash\r\n\r\nbody\r\n"
	key, err := deliveryKey("alice", "INBOX", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	j := journal{root: d.Account.Maildir, uid: -1, gid: -1}
	if err := j.pending(key); err != nil {
		t.Fatal(err)
	}
	// The crashed attempt's copy, as the store wrote it (LF here, so the
	// key must not depend on line ends).
	res, err := mb.Append(ctx, strings.NewReader(strings.ReplaceAll(msg, "\r\n", "\n")), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReader("Subject: crash\r\n\r\nbody\r\n")
	got, _, dup, err := d.Store(ctx, "Delivered-To: alice\r\n", body, body.Size())
	if err != nil || !dup || got.UID != res.UID {
		t.Fatalf("retry after crash: UID %d dup=%v err=%v; want UID %d found", got.UID, dup, err, res.UID)
	}
	if n := count(t, mb); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}

	lost := strings.NewReader("Subject: lost\r\n\r\nbody\r\n")
	key2, _ := deliveryKey("alice", "INBOX", strings.NewReader("Delivered-To: alice\r\nSubject: lost\r\n\r\nbody\r\n"))
	if err := j.pending(key2); err != nil {
		t.Fatal(err)
	}
	if _, _, dup, err := d.Store(ctx, "Delivered-To: alice\r\n", lost, lost.Size()); err != nil || dup {
		t.Fatalf("retry of a delivery that never stored: dup=%v err=%v", dup, err)
	}
	if n := count(t, mb); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

func TestJournalRotates(t *testing.T) {
	j := journal{root: t.TempDir(), uid: -1, gid: -1}
	first := strings.Repeat("a", 32)
	if err := j.done(first, 1, "INBOX"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < journalMaxSize/40; i++ {
		j.pending(strings.Repeat("b", 32))
	}
	if e := j.last(first); e == nil || !e.done || e.uid != 1 {
		t.Fatalf("entry lost after one rotation: %+v", e)
	}
	if _, err := os.Stat(filepath.Join(j.root, journalName+".old")); err != nil {
		t.Fatalf("no rotation: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(j.root, journalName)); fi.Size() > journalMaxSize+100 {
		t.Errorf("journal grew to %d bytes", fi.Size())
	}
}
