package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/roost-mail/roost/backend"
)

// In the system-users layout a root daemon must not follow a user's
// ~/Maildir (or its cur/) to someone else's mail.
func TestOpenRefusesForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files for another uid")
	}
	base := t.TempDir()
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()

	// A fresh Maildir is created for the user and opens.
	own := filepath.Join(base, "alice", "Maildir")
	u, err := s.Open(ctx, backend.Account{Name: "alice", Maildir: own, UID: 4242, GID: 4242})
	if err != nil {
		t.Fatalf("own Maildir: %v", err)
	}
	u.Close()

	// bob's Maildir (owned by another uid), reached through alice's symlink.
	bob := filepath.Join(base, "bob", "Maildir")
	if _, err := s.Open(ctx, backend.Account{Name: "bob", Maildir: bob, UID: 4343, GID: 4343}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "mallory", "Maildir")
	os.MkdirAll(filepath.Dir(link), 0o755)
	if err := os.Symlink(bob, link); err != nil {
		t.Fatal(err)
	}
	_, err = s.Open(ctx, backend.Account{Name: "mallory", Maildir: link, UID: 4242, GID: 4242})
	if !errors.Is(err, backend.ErrPermissionDenied) {
		t.Errorf("Maildir symlinked to another user's: err = %v, want ErrPermissionDenied", err)
	}

	// alice's cur/ replaced by a link to bob's cur/.
	os.RemoveAll(filepath.Join(own, "cur"))
	os.Symlink(filepath.Join(bob, "cur"), filepath.Join(own, "cur"))
	_, err = s.Open(ctx, backend.Account{Name: "alice", Maildir: own, UID: 4242, GID: 4242})
	if !errors.Is(err, backend.ErrPermissionDenied) {
		t.Errorf("cur/ symlinked to another user's: err = %v, want ErrPermissionDenied", err)
	}
}
