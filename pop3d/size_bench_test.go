package pop3d_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/pop3d"
)

// BenchmarkFirstLoginSizes compares the first POP3 login (+ STAT, UIDL,
// QUIT) ever on a mailbox whose files carry their CRLF size in the name
// (",W=", as Roost's and Dovecot's deliveries write them: "known") with
// the same mailbox as Postfix writes it (no size in the name: the login
// measures every message, "unknown"). Each iteration opens both with a
// new store and server, nothing on disk but the message files, one after
// the other. Messages: ROOST_BENCH_MESSAGES (default 5,000) of
// ROOST_BENCH_BODY octets of body (default 16 KiB).
func BenchmarkFirstLoginSizes(b *testing.B) {
	dir := b.TempDir()
	tmpl := [2]string{filepath.Join(dir, "0"), filepath.Join(dir, "1")} // message files: with sizes in the names, without
	n := testenv.SizeBenchMaildirs(b, tmpl[0], tmpl[1], func(i int) string {
		return fmt.Sprintf("From: sender%d@example.edu\nSubject: message %d\n\n", i, i)
	})
	var times [2][]time.Duration
	for i := 0; i < b.N; i++ {
		for k := range tmpl {
			b.StopTimer()
			e, stop := firstOpen(b, tmpl[k])
			b.StartTimer()
			start := time.Now()
			if got := statUIDL(b, e.addr); got != n {
				b.Fatalf("%d UIDL lines, want %d", got, n)
			}
			times[k] = append(times[k], time.Since(start))
			b.StopTimer()
			stop()
			b.StartTimer()
		}
	}
	testenv.ReportPairedTiming(b, times[0], times[1])
}

// firstOpen starts a server with a new store over a new Maildir for alice
// whose cur/ holds hard links to the files in tmpl, nothing else: the next
// login is the first ever. stop shuts the server and store down.
func firstOpen(b *testing.B, tmpl string) (e *env, stop func()) {
	b.Helper()
	var store *maildir.Store
	e = newEnvTB(b, func(o *pop3d.Options) {
		store = maildir.New(maildir.Options{SpecialUse: map[string]string{}})
		o.Store = store
	})
	md := e.maildir("alice")
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	ents, err := os.ReadDir(tmpl)
	if err != nil {
		b.Fatal(err)
	}
	for _, de := range ents {
		if err := os.Link(filepath.Join(tmpl, de.Name()), filepath.Join(md, "cur", de.Name())); err != nil {
			b.Fatal(err)
		}
	}
	return e, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		store.Close() // stops the background measurer
	}
}
