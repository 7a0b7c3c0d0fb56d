package imapd_test

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/bench"
)

// harnessData returns a fresh copy (hard links) of the mail the bench
// harness generates — realistic Postfix-written messages, not the uniform
// ones of largeMaildir — and a passwd-file for its users "big" and
// "large". The data set is generated once into the harness's cache.
func harnessData(b *testing.B) (root, users string) {
	b.Helper()
	// The harness's own data set (and cache) unless ROOST_BENCH_MESSAGES
	// asks for another size.
	o := bench.Full()
	o.Data.BigMessages = benchMessages()
	src, err := bench.EnsureData(o.CacheDir, o.Data, b.Logf)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	root = filepath.Join(dir, "mail")
	if err := bench.LinkTree(src, root); err != nil {
		b.Fatal(err)
	}
	users = filepath.Join(dir, "users")
	lines := ""
	for _, u := range []string{"big", "large"} {
		lines += u + ":{PLAIN}" + bench.Password(u) + "::::::\n"
	}
	if err := os.WriteFile(users, []byte(lines), 0o600); err != nil {
		b.Fatal(err)
	}
	return root, users
}

func harnessLogin(b *testing.B, addr, user string) *imapclient.Client {
	b.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Login(user, bench.Password(user)).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	return c
}

// cpuClock sums the CPU time (user and system, client and server: both
// are in this process) spent in the measured parts of a benchmark. On a
// machine shared with other work it varies far less than wall time.
type cpuClock struct {
	total time.Duration
	start time.Duration
}

func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) begin(b *testing.B) { c.start = cpuNow(b) }
func (c *cpuClock) end(b *testing.B)   { c.total += cpuNow(b) - c.start }
func (c *cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(c.total.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkHarness runs the FETCH rows of the bench harness's "big" and
// "large" workloads in process, so that they can be profiled
// (-cpuprofile): the whole mailbox's FLAGS, ENVELOPE (from the files, then
// from the cache), and the BODYSTRUCTURE (uncached) and BODY[] of the
// large MIME messages.
func BenchmarkHarness(b *testing.B) {
	n := benchMessages()
	root, users := harnessData(b)
	addr, stop := benchServer(b, root, users) // builds the store's indexes once
	harnessLogin(b, addr, "big").Logout().Wait()
	harnessLogin(b, addr, "large").Logout().Wait()
	stop()
	all := imap.SeqSet{{Start: 1, Stop: 0}}
	envelopes := func(b *testing.B, c *imapclient.Client) {
		cmd := c.Fetch(all, &imap.FetchOptions{Envelope: true})
		got := 0
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			buf, err := m.Collect()
			if err != nil || buf.Envelope == nil || buf.Envelope.MessageID == "" {
				b.Fatalf("message %d: %v, envelope %+v", got+1, err, buf.Envelope)
			}
			got++
		}
		if err := cmd.Close(); err != nil || got != n {
			b.Fatalf("FETCH ENVELOPE: %v, %d responses", err, got)
		}
	}

	// timed serves the store, logs user in, runs warm once if given, then
	// times b.N runs of op, CPU included.
	timed := func(b *testing.B, user string, cacheBytes []int64, warm, op func(b *testing.B, c *imapclient.Client)) {
		addr, stop := benchServer(b, root, users, cacheBytes...)
		defer stop()
		c := harnessLogin(b, addr, user)
		defer func() { c.Logout().Wait() }()
		if warm != nil {
			warm(b, c)
		}
		var cpu cpuClock
		b.ResetTimer()
		cpu.begin(b)
		for i := 0; i < b.N; i++ {
			op(b, c)
		}
		cpu.end(b)
		cpu.report(b)
	}
	b.Run("UIDFetchFlags", func(b *testing.B) {
		timed(b, "big", nil, nil, func(b *testing.B, c *imapclient.Client) {
			if got := drain(b, c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})); got != n {
				b.Fatalf("%d responses", got)
			}
		})
	})
	b.Run("FetchEnvelopeFirst", func(b *testing.B) {
		onFreshServers(b, root, users, func(addr string) (run, end func()) {
			c := harnessLogin(b, addr, "big")
			return func() { envelopes(b, c) }, func() { c.Logout().Wait() }
		})
	})
	b.Run("FetchEnvelopeSecond", func(b *testing.B) {
		timed(b, "big", nil, envelopes, envelopes)
	})
	b.Run("LargeBodyStructure", func(b *testing.B) {
		// No cache: every FETCH parses.
		timed(b, "large", []int64{-1}, nil, func(b *testing.B, c *imapclient.Client) {
			if got := drain(b, c.Fetch(all, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})); got != 20 {
				b.Fatalf("%d responses", got)
			}
		})
	})
	b.Run("LargeBody", func(b *testing.B) {
		var total int64
		timed(b, "large", nil, nil, func(b *testing.B, c *imapclient.Client) {
			cmd := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
			for m := cmd.Next(); m != nil; m = cmd.Next() {
				for item := m.Next(); item != nil; item = m.Next() {
					if it, ok := item.(imapclient.FetchItemDataBodySection); ok {
						k, err := io.Copy(io.Discard, it.Literal)
						if err != nil {
							b.Fatal(err)
						}
						total += k
					}
				}
			}
			if err := cmd.Close(); err != nil {
				b.Fatal(err)
			}
		})
		b.SetBytes(total / int64(b.N))
	})
}

// onFreshServers times, for each of b.N servers started on root and
// stopped after, what open returns as run: the first command after a
// start. open (a login, say) and end are not timed.
func onFreshServers(b *testing.B, root, users string, open func(addr string) (run, end func())) {
	var cpu cpuClock
	defer cpu.report(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		addr, stop := benchServer(b, root, users)
		run, end := open(addr)
		b.StartTimer()
		cpu.begin(b)
		run()
		cpu.end(b)
		b.StopTimer()
		end()
		stop()
		b.StartTimer()
	}
}
