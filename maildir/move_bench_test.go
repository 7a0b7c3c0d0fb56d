package maildir

import (
	"context"
	"testing"

	"github.com/roost-mail/roost/backend"
)

// BenchmarkMove100k: IMAP MOVE of one message out of a 100,000-message
// INBOX, then Sync of INBOX (the session reports the EXPUNGE). "rename" is
// Move; "copy+expunge" is what Move did before (and still does across file
// systems): a hard link delivered into the destination, then Expunge.
func BenchmarkMove100k(b *testing.B) {
	root := makeBigMaildir(b, benchMessages)
	s := New(Options{SpecialUse: map[string]string{}})
	defer s.Close()
	mb, snap := openInbox(b, s, root)
	defer mb.Close()
	ctx := context.Background()
	if err := mb.(*mailbox).u.CreateMailbox(ctx, "Dest", ""); err != nil {
		b.Fatal(err)
	}
	next := 0
	for _, mode := range []string{"rename", "copy+expunge"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				uids := []backend.UID{snap.Messages[next%len(snap.Messages)].UID}
				next++
				if mode == "rename" {
					if _, err := mb.Move(ctx, uids, "Dest"); err != nil {
						b.Fatal(err)
					}
				} else {
					res, err := mb.(*mailbox).copy(ctx, uids, "Dest", true)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := mb.Expunge(ctx, res.Source); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := mb.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
