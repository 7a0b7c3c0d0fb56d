package imapd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/maildir"
)

// benchMessages is the size of the large INBOX (ROOST_BENCH_MESSAGES,
// default 100,000).
func benchMessages() int {
	if n, err := strconv.Atoi(os.Getenv("ROOST_BENCH_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 100000
}

// largeMaildir writes n messages into a new Maildir's cur/, as a mailbox
// that has been in use for years looks, and returns the mail root and a
// passwd-file for alice. The first store to open it builds its index.
func largeMaildir(b *testing.B, n int) (root, users string) {
	b.Helper()
	dir := b.TempDir()
	root = filepath.Join(dir, "mail")
	md := filepath.Join(root, "alice", "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("From: Sender %d <sender%d@example.org>\nTo: alice@example.edu\nSubject: Message number %d about topic %d\nDate: Mon, 02 Mar 2026 09:%02d:00 +0000\nMessage-ID: <%d@example.org>\n\nBody of message %d.\nSecond line.\n",
			i%500, i%500, i, i%97, i%60, i, i)
		flags := "S"
		if i%10 == 0 {
			flags = ""
		}
		name := fmt.Sprintf("%d.M%dP1.bench:2,%s", 1700000000+i, i, flags)
		if err := os.WriteFile(filepath.Join(md, "cur", name), []byte(msg), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	users = filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}"+alicePass+"::::::\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return root, users
}

// benchServer starts a fresh store and server over root, so nothing is
// cached in memory from an earlier one.
func benchServer(b *testing.B, root, users string, cacheBytes ...int64) (addr string, stop func()) {
	b.Helper()
	cache := int64(256 << 20)
	if len(cacheBytes) > 0 {
		cache = cacheBytes[0]
	}
	// The store is this server's alone: stop closes it too, so that its
	// background size measurer and watcher end with the iteration.
	store := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	addr, shutdown := serveBench(b, store, root, users, cache)
	return addr, func() {
		shutdown()
		store.Close()
	}
}

// serveBench starts a server over store and the mail root root, with the
// users of the passwd-file users and a cache of cacheBytes (0: imapd's
// default). stop shuts the server down but leaves store open.
func serveBench(b *testing.B, store backend.Store, root, users string, cacheBytes int64) (addr string, stop func()) {
	b.Helper()
	fa, err := fileauth.New(fileauth.Options{Path: users})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := imapd.New(imapd.Options{
		Store:              store,
		Auth:               auth.WithDefaults(fa, auth.Defaults{MailRoot: root}),
		Logger:             slog.New(slog.DiscardHandler),
		AllowPlaintextAuth: true,
		CacheBytes:         cacheBytes,
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
}

func benchLogin(b *testing.B, addr string) *imapclient.Client {
	b.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Login("alice", alicePass).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	return c
}

// drain runs a FETCH and counts the responses without keeping them.
func drain(b *testing.B, cmd *imapclient.FetchCommand) int {
	n := 0
	for cmd.Next() != nil {
		n++
	}
	if err := cmd.Close(); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkLargeMailbox measures the operations a client runs on a
// 100,000-message INBOX. Each LoginSelect and FetchEnvelopeFirst
// iteration uses a new store and server, so nothing is in memory yet.
func BenchmarkLargeMailbox(b *testing.B) {
	n := benchMessages()
	root, users := largeMaildir(b, n)
	addr, stop := benchServer(b, root, users) // builds the store's index once
	benchLogin(b, addr).Logout().Wait()
	stop()
	all := imap.SeqSet{{Start: 1, Stop: 0}}

	b.Run("LoginSelect", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			addr, stop := benchServer(b, root, users)
			b.StartTimer()
			c := benchLogin(b, addr)
			b.StopTimer()
			c.Logout().Wait()
			stop()
			b.StartTimer()
		}
	})
	b.Run("UIDFetchFlags", func(b *testing.B) {
		addr, stop := benchServer(b, root, users)
		defer stop()
		c := benchLogin(b, addr)
		defer func() { c.Logout().Wait() }()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if got := drain(b, c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})); got != n {
				b.Fatalf("%d responses", got)
			}
		}
	})
	b.Run("FetchEnvelopeFirst", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			addr, stop := benchServer(b, root, users)
			c := benchLogin(b, addr)
			b.StartTimer()
			if got := drain(b, c.Fetch(all, &imap.FetchOptions{Envelope: true})); got != n {
				b.Fatalf("%d responses", got)
			}
			b.StopTimer()
			c.Logout().Wait()
			stop()
			b.StartTimer()
		}
	})
	b.Run("FetchEnvelopeSecond", func(b *testing.B) {
		addr, stop := benchServer(b, root, users)
		defer stop()
		c := benchLogin(b, addr)
		defer func() { c.Logout().Wait() }()
		drain(b, c.Fetch(all, &imap.FetchOptions{Envelope: true}))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			drain(b, c.Fetch(all, &imap.FetchOptions{Envelope: true}))
		}
	})
	// UIDSearchFrom runs after one search has filled the cache, as on a
	// server that has been up for a while; the first search costs what
	// FetchEnvelopeFirst does.
	b.Run("UIDSearchFrom", func(b *testing.B) {
		addr, stop := benchServer(b, root, users)
		defer stop()
		c := benchLogin(b, addr)
		defer func() { c.Logout().Wait() }()
		search := func() {
			data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "sender7@"}}}, nil).Wait()
			if err != nil || len(data.AllUIDs()) != (n+492)/500 {
				b.Fatalf("search: %v, %d results", err, len(data.AllUIDs()))
			}
		}
		search()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			search()
		}
	})
}

// BenchmarkIdleMemory reports the memory each IDLE connection costs: it
// opens ROOST_BENCH_IDLE (default 1,000) sessions that select INBOX and
// IDLE, and divides the growth of heap and goroutine stacks by their
// number.
func BenchmarkIdleMemory(b *testing.B) {
	conns := 1000
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_IDLE")); err == nil && v > 0 {
		conns = v
	}
	root, users := largeMaildir(b, 1000)
	for i := 0; i < b.N; i++ {
		addr, stop := benchServer(b, root, users)
		benchLogin(b, addr).Logout().Wait()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var raws []net.Conn
		for j := 0; j < conns; j++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(c, "a LOGIN alice %s\r\nb SELECT INBOX\r\nc IDLE\r\n", alicePass)
			buf := make([]byte, 4096)
			var got strings.Builder
			for !strings.Contains(got.String(), "+ idling") {
				k, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				got.Write(buf[:k])
			}
			raws = append(raws, c)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		// The client side of each connection lives in this process too;
		// it is a bare net.Conn, a few hundred bytes.
		grown := int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)
		b.ReportMetric(float64(grown)/float64(conns)/1024, "KB/conn")
		b.ReportMetric(float64(runtime.NumGoroutine())/float64(conns), "goroutines/conn")
		for _, c := range raws {
			c.Close()
		}
		stop()
	}
}
