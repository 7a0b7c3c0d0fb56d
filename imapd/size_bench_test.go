package imapd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/imapd"
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
	n, body := 5000, 16<<10
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_BODY")); err == nil && v > 0 {
		body = v
	}
	dir := b.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}"+alicePass+"::::::\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	known, unknown := filepath.Join(dir, "known"), filepath.Join(dir, "unknown")
	line := strings.Repeat("x", 71) + "\n"
	for _, root := range []string{known, unknown} {
		cur := filepath.Join(root, "alice", "Maildir", "cur")
		if err := os.MkdirAll(cur, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := range n {
			msg := fmt.Sprintf("From: Sender %d <sender%d@example.org>\nTo: alice@example.edu\nSubject: Message %d\nDate: Mon, 02 Mar 2026 09:%02d:00 +0000\nMessage-ID: <%d@example.org>\n\n%s",
				i%500, i%500, i, i%60, i, strings.Repeat(line, body/len(line)))
			name := fmt.Sprintf("%d.M%dP1.bench", 1700000000+i, i)
			if root == known {
				name += fmt.Sprintf(",S=%d,W=%d", len(msg), len(msg)+strings.Count(msg, "\n"))
			}
			if err := os.WriteFile(filepath.Join(cur, name+":2,S"), []byte(msg), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
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
	fa, err := fileauth.New(fileauth.Options{Path: users})
	if err != nil {
		b.Fatal(err)
	}
	store := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	srv, err := imapd.New(imapd.Options{
		Store:              store,
		Auth:               auth.WithDefaults(fa, auth.Defaults{MailRoot: root}),
		Logger:             slog.New(slog.DiscardHandler),
		AllowPlaintextAuth: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	return benchLogin(b, ln.Addr().String()), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		store.Close() // stops the background measurer before the next open
	}
}
