package maildir

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// A lock held elsewhere beyond the wait is backend.ErrLocked: an IMAP
// client then hears [INUSE] (try again), not a server bug.
func TestDotlockTimeoutIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dovecot-uidlist.lock")
	g := newNameGen()
	held, err := acquireDotlock(context.Background(), path, time.Hour, time.Second, g)
	if err != nil {
		t.Fatal(err)
	}
	defer held.release()
	_, err = acquireDotlock(context.Background(), path, time.Hour, 50*time.Millisecond, g)
	if !errors.Is(err, backend.ErrLocked) {
		t.Fatalf("second lock: %v, want backend.ErrLocked", err)
	}
}
