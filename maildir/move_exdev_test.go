package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMoveAcrossFileSystems: a folder on another file system (a tmpfs
// mounted on it) cannot take a rename (EXDEV); Move copies, then expunges
// the originals, and every message is there once.
func TestMoveAcrossFileSystems(t *testing.T) {
	ctx := context.Background()
	root := newMaildir(t)
	u := openMover(t, root)
	if err := u.CreateMailbox(ctx, "Other", ""); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(root, ".Other")
	if err := syscall.Mount("roost-test", other, "tmpfs", 0, "size=4m"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skip("mounting a tmpfs needs CAP_SYS_ADMIN")
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(other, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", other, err)
		}
	})
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(other, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(other, "maildirfolder"), "", time.Time{})
	fillInbox(t, u, 6)
	q0, _ := u.Quota(ctx)
	lines, err := moveAll(ctx, u, "INBOX", "Other", 6)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 6 {
		t.Errorf("moved %d of 6 across file systems", len(lines))
	}
	if q, _ := u.Quota(ctx); q != q0 {
		t.Errorf("quota %+v after a move between counted folders, was %+v", q, q0)
	}
	census(t, root, 6, "INBOX", "Other")
	checkQuotaFile(t, root)
	// And back again.
	if _, err := moveAll(ctx, u, "Other", "INBOX", 6); err != nil {
		t.Fatal(err)
	}
	census(t, root, 6, "INBOX", "Other")
}
