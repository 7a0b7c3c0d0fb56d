package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/backend"
)

func mailboxNames(t *testing.T, u backend.User) []string {
	t.Helper()
	list, err := u.ListMailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mi := range list {
		if !mi.NoSelect {
			out = append(out, mi.Name)
		}
	}
	return out
}

func TestMaxMailboxes(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	_, u := openRoot(t, root, Options{MaxMailboxes: 3})
	// The five special-use folders exist and do not count.
	if got := len(mailboxNames(t, u)); got != 6 {
		t.Fatalf("%d mailboxes after Open, want INBOX + 5 special-use", got)
	}
	for _, name := range []string{"A", "B"} {
		if err := u.CreateMailbox(ctx, name, ""); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	// C/D needs two folders (C and C/D): refused whole, nothing made.
	err := u.CreateMailbox(ctx, "C/D", "")
	if !errors.Is(err, backend.ErrLimit) {
		t.Fatalf("create C/D with 2 of 3 used = %v, want ErrLimit", err)
	}
	if !strings.Contains(err.Error(), "limit is 3") || !strings.Contains(err.Error(), "has 2 folders") {
		t.Errorf("error %q does not tell the count and the limit", err)
	}
	if _, err := os.Stat(filepath.Join(root, ".C")); err == nil {
		t.Error("refused create left the parent C behind")
	}
	if err := u.CreateMailbox(ctx, "C", ""); err != nil {
		t.Fatalf("create C (3 of 3): %v", err)
	}
	if err := u.CreateMailbox(ctx, "E", backend.SpecialUseArchive); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("create E beyond the limit = %v, want ErrLimit", err)
	}
	// An existing name is still reported as existing, not as the limit.
	if err := u.CreateMailbox(ctx, "A", ""); !errors.Is(err, backend.ErrMailboxExists) {
		t.Errorf("create existing A at the limit = %v, want ErrMailboxExists", err)
	}
	// Renames that do not add a folder pass; children move along.
	if err := u.RenameMailbox(ctx, "A", "C/A"); err != nil {
		t.Errorf("rename A to C/A at the limit: %v", err)
	}
	if err := u.RenameMailbox(ctx, "C", "Z"); err != nil {
		t.Errorf("rename C (with child C/A) to Z at the limit: %v", err)
	}
	// A special-use folder renamed starts counting (Open makes a new one).
	if err := u.RenameMailbox(ctx, "Sent", "Sent 2025"); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("rename Sent to Sent 2025 at the limit = %v, want ErrLimit", err)
	}
	// Renaming INBOX creates a mailbox.
	if err := u.RenameMailbox(ctx, "INBOX", "Old"); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("rename INBOX at the limit = %v, want ErrLimit", err)
	}
	if err := u.DeleteMailbox(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := u.RenameMailbox(ctx, "Sent", "Sent 2025"); err != nil {
		t.Errorf("rename Sent with a free place: %v", err)
	}
	want := []string{"INBOX", "Archive", "Drafts", "Junk", "Sent 2025", "Trash", "Z", "Z/A"}
	if got := mailboxNames(t, u); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("mailboxes %v, want %v", got, want)
	}
	// Special-use folders are created at Open even beyond the limit.
	_, u2 := openRoot(t, root, Options{MaxMailboxes: 1})
	if got := mailboxNames(t, u2); len(got) != len(want)+1 || !u2.(*user).exists("Sent") {
		t.Errorf("after Open over the limit: %v, want Sent re-created", got)
	}
	// Over a lowered limit, renames and deletes still work; creates do not.
	if err := u2.RenameMailbox(ctx, "Z", "Y"); err != nil {
		t.Errorf("rename over a lowered limit: %v", err)
	}
	if err := u2.CreateMailbox(ctx, "F", ""); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("create over a lowered limit = %v, want ErrLimit", err)
	}
	if err := u2.DeleteMailbox(ctx, "Y/A"); err != nil {
		t.Errorf("delete over a lowered limit: %v", err)
	}
}

func TestMaxMailboxesUnlimited(t *testing.T) {
	ctx := context.Background()
	_, u := openRoot(t, newMaildir(t), Options{SpecialUse: map[string]string{}})
	for i := 0; i < 30; i++ {
		if err := u.CreateMailbox(ctx, "F"+itoa(i), ""); err != nil {
			t.Fatalf("create %d with no limit: %v", i, err)
		}
	}
}

// Configured special-use folders, nested ones too, do not count; nor does
// one deleted and created again by hand.
func TestMaxMailboxesCustomSpecialUse(t *testing.T) {
	ctx := context.Background()
	_, u := openRoot(t, newMaildir(t), Options{MaxMailboxes: 1,
		SpecialUse: map[string]string{"Gesendet": backend.SpecialUseSent, "Archiv/2025": backend.SpecialUseArchive}})
	if err := u.CreateMailbox(ctx, "A", ""); err != nil {
		t.Errorf("create the first folder: %v", err)
	}
	if err := u.CreateMailbox(ctx, "B", ""); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("create the second folder = %v, want ErrLimit", err)
	}
	if err := u.DeleteMailbox(ctx, "Gesendet"); err != nil {
		t.Fatal(err)
	}
	if err := u.CreateMailbox(ctx, "Gesendet", backend.SpecialUseSent); err != nil {
		t.Errorf("re-create special-use folder: %v", err)
	}
	// Its parent Archiv is no folder of its own: creating it counts.
	if err := u.CreateMailbox(ctx, "Archiv", ""); !errors.Is(err, backend.ErrLimit) {
		t.Errorf("create Archiv at the limit = %v, want ErrLimit", err)
	}
}
