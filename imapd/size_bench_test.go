package imapd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
)

// BenchmarkFirstFetchSizes compares the first FETCH after the first
// SELECT ever of a mailbox whose files carry their CRLF size in the name
// (",W=", as Roost's and Dovecot's deliveries write them: "known") with
// the same mailbox as Postfix writes it (no size in the name: the store
// has measured nothing yet, "unknown"), the store's background measurer
// running meanwhile in both. Each iteration opens both with a new store
// and server, nothing on disk but the message files, one after the other.
// Messages: ROOST_BENCH_MESSAGES (default 5,000) of ROOST_BENCH_BODY
// octets of body (default 16 KiB).
func BenchmarkFirstFetchSizes(b *testing.B) {
	dir := b.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}"+alicePass+"::::::\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	known, unknown := filepath.Join(dir, "known"), filepath.Join(dir, "unknown")
	cur := func(root string) string { return filepath.Join(root, "alice", "Maildir", "cur") }
	n := testenv.SizeBenchMaildirs(b, cur(known), cur(unknown), func(i int) string {
		return fmt.Sprintf("From: Sender %d <sender%d@example.org>\nTo: alice@example.edu\nSubject: Message %d\nDate: Mon, 02 Mar 2026 09:%02d:00 +0000\nMessage-ID: <%d@example.org>\n\n",
			i%500, i%500, i, i%60, i)
	})
	all := imap.SeqSet{{Start: 1, Stop: 0}}
	for _, bc := range []struct {
		name string
		opts *imap.FetchOptions
	}{
		{"Flags", &imap.FetchOptions{UID: true, Flags: true}},
		{"Envelope", &imap.FetchOptions{Envelope: true}},
		{"RFC822Size", &imap.FetchOptions{RFC822Size: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var times [2][]time.Duration
			for i := 0; i < b.N; i++ {
				for k, root := range []string{known, unknown} {
					c, stop := firstSelect(b, root, users)
					start := time.Now()
					if got := drain(b, c.Fetch(all, bc.opts)); got != n {
						b.Fatalf("%d responses", got)
					}
					times[k] = append(times[k], time.Since(start))
					c.Logout().Wait()
					stop()
				}
			}
			testenv.ReportPairedTiming(b, times[0], times[1])
		})
	}
}

// firstSelect removes every file a store keeps in alice's Maildir under
// root (so that the next open is the first ever), starts a new store and
// server on it, and returns a client that selected INBOX.
func firstSelect(b *testing.B, root, users string) (*imapclient.Client, func()) {
	b.Helper()
	md := filepath.Join(root, "alice", "Maildir")
	ents, err := os.ReadDir(md)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); n != "cur" && n != "new" && n != "tmp" {
			if err := os.RemoveAll(filepath.Join(md, n)); err != nil {
				b.Fatal(err)
			}
		}
	}
	store := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	addr, stop := serveBench(b, store, root, users, 0)
	return benchLogin(b, addr), func() {
		stop()
		store.Close() // stops the background measurer before the next open
	}
}
