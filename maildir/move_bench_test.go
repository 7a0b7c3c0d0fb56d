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
				uids := []backend.UID{snap.Messages()[next%len(snap.Messages())].UID}
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

// BenchmarkMoveAll10k: MOVE of all 10,000 messages of a folder into
// another (one command), the new way and the old.
func BenchmarkMoveAll10k(b *testing.B) {
	for _, mode := range []string{"rename", "copy+expunge"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root := makeBigMaildir(b, 10_000)
				s := New(Options{SpecialUse: map[string]string{}})
				mb, snap := openInbox(b, s, root)
				ctx := context.Background()
				if err := mb.(*mailbox).u.CreateMailbox(ctx, "Dest", ""); err != nil {
					b.Fatal(err)
				}
				all := make([]backend.UID, len(snap.Messages()))
				for j, m := range snap.Messages() {
					all[j] = m.UID
				}
				b.StartTimer()
				if mode == "rename" {
					if _, err := mb.Move(ctx, all, "Dest"); err != nil {
						b.Fatal(err)
					}
				} else {
					res, err := mb.(*mailbox).copy(ctx, all, "Dest", true)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := mb.Expunge(ctx, res.Source); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				mb.Close()
				s.Close()
			}
		})
	}
}
