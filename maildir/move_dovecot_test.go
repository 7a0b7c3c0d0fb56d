package maildir

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
)

// TestDovecotReadsRoostMove: messages Roost moved out of Dovecot's INBOX
// (with Dovecot's keyword letters, remapped to the destinations' own) are
// seen by Dovecot exactly as Roost sees them, once each.
func TestDovecotReadsRoostMove(t *testing.T) {
	testenv.Require(t, "/usr/lib/dovecot/imap", "dovecot-imapd")
	u, home := openFixture(t, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()
	if err := u.CreateMailbox(ctx, "Roost", ""); err != nil {
		t.Fatal(err)
	}
	in, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	snap, err := in.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := uids(snap)
	if len(all) < 3 {
		t.Fatalf("fixture INBOX has %d messages", len(all))
	}
	if _, err := in.SetFlags(ctx, all[:1], backend.FlagsAdd, backend.FlagFlagged, []string{"$Moved"}); err != nil {
		t.Fatal(err)
	}
	if res, err := in.Move(ctx, all[:2], "Projects/2024"); err != nil || len(res.Dest) != 2 {
		t.Fatalf("move to Projects/2024 = %+v, %v", res, err)
	}
	if res, err := in.Move(ctx, all[2:], "Roost"); err != nil || len(res.Dest) != len(all)-2 {
		t.Fatalf("move to Roost = %+v, %v", res, err)
	}
	mine := roostView(t, u)
	dove := runDovecot(t, home)
	for name, b := range dove.boxes {
		t.Logf("Dovecot: %s %d/%d %q", name, b.uidValidity, b.uidNext, b.msgs)
	}
	// testdata/dovecot_session.py views INBOX, Projects/2024 and Roost
	// among others.
	if got := len(dove.boxes["INBOX"].msgs) + len(dove.boxes["Roost"].msgs); got != len(all)-2 || len(dove.boxes["Projects/2024"].msgs) != 3 {
		t.Errorf("Dovecot sees %d messages in INBOX and Roost, %d in Projects/2024; want %d and 3",
			got, len(dove.boxes["Projects/2024"].msgs), len(all)-2)
	}
	compareViews(t, dove, mine, "Dovecot reading Roost's moves")
	compareViews(t, dove, freshView(t, filepath.Join(home, "Maildir")), "Roost after Dovecot")
}
