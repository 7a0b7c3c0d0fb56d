package quota_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/quota"
)

// fill is a message of about n bytes.
func fill(n int) string {
	return "Subject: filler\r\n\r\n" + strings.Repeat(strings.Repeat("y", 78)+"\r\n", n/80)
}

func openUser(t *testing.T, s backend.Store, acct backend.Account) (backend.User, backend.Mailbox) {
	t.Helper()
	ctx := context.Background()
	u, err := s.Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close(); u.Close() })
	return u, mb
}

// warnings returns the UIDs of the warning mails in INBOX.
func warnings(t *testing.T, mb backend.Mailbox) []backend.UID {
	t.Helper()
	ctx := context.Background()
	snap, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []backend.UID
	for _, m := range snap.Messages() {
		rc, err := mb.OpenMessage(ctx, m.UID)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, _ := rc.Read(buf)
		rc.Close()
		if strings.Contains(string(buf[:n]), "Auto-Submitted: auto-generated") {
			out = append(out, m.UID)
		}
	}
	return out
}

func TestWarnOncePerCrossingAndReset(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	acct := backend.Account{Name: "alice", Maildir: filepath.Join(dir, "alice", "Maildir"), QuotaBytes: 100000, UID: -1, GID: -1}
	p, err := quota.New(quota.Options{Warnings: []int{80, 90, 100}, Hostname: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	u, mb := openUser(t, maildir.New(maildir.Options{}), acct)
	deliver := func(n int) backend.UID {
		t.Helper()
		res, err := mb.Append(ctx, strings.NewReader(fill(n)), backend.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Warn(ctx, u, acct); err != nil {
			t.Fatal(err)
		}
		return res.UID
	}
	big := deliver(70000) // 70%: nothing
	if w := warnings(t, mb); len(w) != 0 {
		t.Fatalf("at 70%%: %d warnings", len(w))
	}
	deliver(5000) // 75%
	deliver(6000) // 81%: warning
	deliver(1000) // 82% (+ the warning): no second one
	if w := warnings(t, mb); len(w) != 1 {
		t.Fatalf("after crossing 80%%: %d warnings, want 1", len(w))
	}
	// Usage drops below 80% (the user deleted mail): the level resets...
	if _, err := mb.Expunge(ctx, []backend.UID{big}); err != nil {
		t.Fatal(err)
	}
	if lvl, err := p.Warn(ctx, u, acct); err != nil || lvl != 0 {
		t.Fatalf("after expunge: Warn = %d, %v", lvl, err)
	}
	if b, _ := os.ReadFile(filepath.Join(acct.Maildir, quota.StateFile)); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("state after dropping below: %q, want 0", b)
	}
	// ... and the next crossing warns again; one jump over 80 and 90 is one
	// crossing, one mail.
	deliver(80000) // ~13% -> ~93%
	if w := warnings(t, mb); len(w) != 2 {
		t.Fatalf("after crossing again: %d warnings, want 2", len(w))
	}
	if b, _ := os.ReadFile(filepath.Join(acct.Maildir, quota.StateFile)); strings.TrimSpace(string(b)) != "90" {
		t.Fatalf("state after the jump: %q, want 90", b)
	}
}

// TestWarnConcurrent has 16 deliveries through two stores (two processes'
// worth of in-memory state) cross 50% together: exactly one warning.
func TestWarnConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	acct := backend.Account{Name: "bob", Maildir: filepath.Join(dir, "bob", "Maildir"), QuotaBytes: 200000, UID: -1, GID: -1}
	p, err := quota.New(quota.Options{Warnings: []int{50}, Hostname: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	stores := []backend.Store{maildir.New(maildir.Options{}), maildir.New(maildir.Options{})}
	users := make([]backend.User, 2)
	boxes := make([]backend.Mailbox, 2)
	for i, s := range stores {
		users[i], boxes[i] = openUser(t, s, acct)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % 2
			if _, err := boxes[k].Append(ctx, strings.NewReader(fill(7000)), backend.AppendOptions{}); err != nil {
				t.Error(err)
				return
			}
			if _, err := p.Warn(ctx, users[k], acct); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if w := warnings(t, boxes[0]); len(w) != 1 {
		t.Fatalf("16 concurrent deliveries crossing 50%%: %d warnings, want exactly 1", len(w))
	}
}

func TestWarnUnlimited(t *testing.T) {
	ctx := context.Background()
	acct := backend.Account{Name: "carol", Maildir: filepath.Join(t.TempDir(), "Maildir"), UID: -1, GID: -1}
	p, _ := quota.New(quota.Options{Warnings: []int{1}})
	u, mb := openUser(t, maildir.New(maildir.Options{}), acct)
	if _, err := mb.Append(ctx, strings.NewReader(fill(5000)), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if lvl, err := p.Warn(ctx, u, acct); err != nil || lvl != 0 {
		t.Fatalf("unlimited user: Warn = %d, %v; want no warning", lvl, err)
	}
}
