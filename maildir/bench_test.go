package maildir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/roost-mail/roost/backend"
)

// Benchmarks (go test -run '^$' -bench . ./maildir/). docs/storage.md
// records the numbers and the comparison with Dovecot.

const benchMessages = 100_000

// makeBigMaildir writes n small messages in cur/ with Dovecot-style names
// and returns the root. The uidlist is made current by one Roost open.
func makeBigMaildir(b *testing.B, n int) string {
	b.Helper()
	root := filepath.Join(b.TempDir(), "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	body := []byte("From: a@example.edu\nSubject: benchmark\n\nhello\n")
	vsize := len(body) + bytes.Count(body, []byte("\n"))
	base := time.Now().Add(-24 * time.Hour).Unix()
	for i := 0; i < n; i++ {
		flags := ":2,S"
		if i%10 == 0 {
			flags = ":2,"
		}
		name := fmt.Sprintf("%d.M%dP%d.bench.example.edu,S=%d,W=%d%s", base+int64(i/100), i%1000000, 1000+i%50, len(body), vsize, flags)
		if err := os.WriteFile(filepath.Join(root, "cur", name), body, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	s := New(Options{SpecialUse: map[string]string{}})
	defer s.Close()
	u, err := s.Open(context.Background(), backend.Account{Name: "bench", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		b.Fatal(err)
	}
	mb, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	mb.Close()
	return root
}

// bigInbox makes an n-message Maildir and opens its INBOX in a Store of
// its own, both closed when b ends.
func bigInbox(b *testing.B, n int) (string, backend.Mailbox, *backend.Snapshot) {
	root := makeBigMaildir(b, n)
	s := New(Options{SpecialUse: map[string]string{}})
	b.Cleanup(func() { s.Close() })
	mb, snap := openInbox(b, s, root)
	b.Cleanup(func() { mb.Close() })
	return root, mb, snap
}

func openInbox(b *testing.B, s *Store, root string) (backend.Mailbox, *backend.Snapshot) {
	b.Helper()
	ctx := context.Background()
	u, err := s.Open(ctx, backend.Account{Name: "bench", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		b.Fatal(err)
	}
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	snap, err := mb.Sync(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return mb, snap
}

// BenchmarkOpenSync100k: a new process opens a 100,000-message INBOX
// whose uidlist is current: one uidlist read and one directory listing.
//
// ROOST_BENCH_MAILDIR names an existing Maildir to open instead (for the
// side-by-side run with Dovecot, testdata/bench_dovecot_select.py).
func BenchmarkOpenSync100k(b *testing.B) {
	root := os.Getenv("ROOST_BENCH_MAILDIR")
	want := benchMessages
	if root == "" {
		root = makeBigMaildir(b, benchMessages)
	} else {
		s := New(Options{SpecialUse: map[string]string{}})
		_, snap := openInbox(b, s, root) // bring the uidlist up to date
		want = len(snap.Messages())
		s.Close()
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		os.Remove(filepath.Join(root, cacheName)) // measure the listing path
		b.StartTimer()
		s := New(Options{SpecialUse: map[string]string{}})
		mb, snap := openInbox(b, s, root)
		if len(snap.Messages()) != want {
			b.Fatalf("%d messages, want %d", len(snap.Messages()), want)
		}
		mb.Close()
		s.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	// Memory: the snapshot itself, and everything kept while it is open.
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := New(Options{SpecialUse: map[string]string{}})
	mb, snap := openInbox(b, s, root)
	runtime.GC()
	runtime.ReadMemStats(&after)
	var snapBytes int64
	for _, m := range snap.Messages() {
		snapBytes += int64(unsafe.Sizeof(m)) + int64(len(m.Key))
	}
	b.ReportMetric(float64(snapBytes)/float64(want), "snapshot-B/msg")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(want), "retained-B/msg")
	runtime.KeepAlive(snap)
	mb.Close()
	s.Close()
}

// BenchmarkFirstOpenPostfix100k: the first open ever of a 100,000-message
// INBOX that Postfix wrote (LF files in new/ without ",S=", about 3 KB
// each, no uidlist): every file gets a UID and its date (one stat); its
// CRLF size is left unknown. measure-ms is the background measurement
// that follows, from the snapshot to every size published and recorded
// in the uidlist (one run, after the timed ones), including the
// measurer's one-second wait (measureDelay).
func BenchmarkFirstOpenPostfix100k(b *testing.B) {
	root := filepath.Join(b.TempDir(), "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	body := []byte("Return-Path: <a@example.edu>\nFrom: a@example.edu\nSubject: benchmark\n\n" +
		strings.Repeat("A line of a typical mail body, about 70 characters long..........\n", 45))
	base := time.Now().Add(-24 * time.Hour).Unix()
	for i := 0; i < benchMessages; i++ {
		name := fmt.Sprintf("%d.V801I%xM%d.mx1", base+int64(i/100), i, i%1000000)
		if err := os.WriteFile(filepath.Join(root, "new", name), body, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, f := range []string{uidlistName, cacheName, uidvalidityFloorName} {
			os.Remove(filepath.Join(root, f))
		}
		b.StartTimer()
		s := New(Options{SpecialUse: map[string]string{}})
		mb, snap := openInbox(b, s, root)
		if len(snap.Messages()) != benchMessages {
			b.Fatalf("%d messages, want %d", len(snap.Messages()), benchMessages)
		}
		mb.Close()
		s.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")

	for _, f := range []string{uidlistName, cacheName, uidvalidityFloorName} {
		os.Remove(filepath.Join(root, f))
	}
	s := New(Options{SpecialUse: map[string]string{}})
	defer s.Close()
	mb, snap := openInbox(b, s, root)
	defer mb.Close()
	start, cpu1 := time.Now(), cpuTime()
	st := mb.(*mailbox).st
	for {
		st.mu.Lock()
		busy := st.measuring
		st.mu.Unlock()
		if !busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "measure-ms")
	b.ReportMetric(float64((cpuTime()-cpu1).Microseconds())/1000, "measure-cpu-ms")
	if snap, _ = mb.Sync(context.Background()); slices.ContainsFunc(snap.Messages(), func(m backend.Message) bool { return m.Size < 0 }) {
		b.Fatal("sizes still unknown after the measurer finished")
	}
}

// cpuTime is this process's user+system time: on a shared, loaded machine
// it says more than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOpenCached100k: the same open once roost-cache is valid (the
// mailbox was quiet for a second after the last change): no listing.
func BenchmarkOpenCached100k(b *testing.B) {
	root := os.Getenv("ROOST_BENCH_MAILDIR")
	if root == "" {
		root = makeBigMaildir(b, benchMessages)
		past := time.Now().Add(-2 * time.Second)
		for _, p := range []string{"new", "cur", uidlistName} {
			if err := os.Chtimes(filepath.Join(root, p), past, past); err != nil {
				b.Fatal(err)
			}
		}
	}
	s := New(Options{SpecialUse: map[string]string{}})
	mb, first := openInbox(b, s, root)
	want := len(first.Messages())
	mb.Close()
	s.Close()
	if want == 0 {
		b.Fatal("empty mailbox")
	}
	if _, err := os.Stat(filepath.Join(root, cacheName)); err != nil {
		b.Fatal("no roost-cache written:", err)
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := New(Options{SpecialUse: map[string]string{}})
		mb, snap := openInbox(b, s, root)
		if len(snap.Messages()) != want {
			b.Fatalf("%d messages, want %d", len(snap.Messages()), want)
		}
		mb.Close()
		s.Close()
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// BenchmarkSyncUnchanged100k: Sync when nothing changed (IMAP NOOP).
func BenchmarkSyncUnchanged100k(b *testing.B) {
	_, mb, _ := bigInbox(b, benchMessages)
	time.Sleep(1100 * time.Millisecond) // let directory mtimes age past the granularity guard
	mb.Sync(context.Background())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := mb.Sync(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// forceRewrite makes the next uidlist write of mb a full rewrite by
// rename, as every write was before records were appended: the "rewrite"
// half of the before/after benchmarks.
func forceRewrite(mb backend.Mailbox) {
	st := mb.(*mailbox).st
	st.mu.Lock()
	st.fileClean = false
	st.mu.Unlock()
}

// benchModes runs f once per uidlist write mode on one shared mailbox:
// "rewrite" (the old way, the baseline) then "append".
func benchModes(b *testing.B, f func(b *testing.B, rewrite bool)) {
	for _, mode := range []string{"rewrite", "append"} {
		b.Run(mode, func(b *testing.B) { f(b, mode == "rewrite") })
	}
}

// BenchmarkPickUpNew1000: 1,000 Postfix deliveries (LF, no ",S=") land
// in new/ of an open 100,000-message INBOX; one Sync numbers them.
func BenchmarkPickUpNew1000(b *testing.B) {
	root, mb, snap := bigInbox(b, benchMessages)
	have := len(snap.Messages())
	body := []byte("Return-Path: <a@example.edu>\nSubject: new\n\nnew mail\n")
	seq := 0
	benchModes(b, func(b *testing.B, rewrite bool) {
		benchPickUp(b, mb, &have, func() {
			for j := 0; j < 1000; j++ {
				seq++
				name := fmt.Sprintf("%d.V801I%xM%d.mx1", time.Now().Unix(), seq, j)
				if err := os.WriteFile(filepath.Join(root, "new", name), body, 0o600); err != nil {
					b.Fatal(err)
				}
			}
			if rewrite {
				forceRewrite(mb)
			}
		})
	})
}

// benchPickUp times one Sync of mb after each call of deliver (untimed),
// which must add 1,000 messages; have is the count before.
func benchPickUp(b *testing.B, mb backend.Mailbox, have *int, deliver func()) {
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		deliver()
		b.StartTimer()
		c0 := cpuTime()
		snap, err := mb.Sync(context.Background())
		cpu += cpuTime() - c0
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Messages()) != *have+1000 {
			b.Fatalf("%d messages, want %d", len(snap.Messages()), *have+1000)
		}
		*have = len(snap.Messages())
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// BenchmarkPickUpDelivered1000: another process (here a second Store,
// with its own state and watcher) appends 1,000 messages to an open INBOX
// of 10,000 or 100,000 messages, numbering them in dovecot-uidlist as
// lmtpd does; one Sync of the first shows them. The cost should not grow
// with the mailbox.
func BenchmarkPickUpDelivered1000(b *testing.B) {
	for _, n := range []int{benchMessages / 10, benchMessages} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) { benchPickUpDelivered(b, n) })
	}
}

func benchPickUpDelivered(b *testing.B, n int) {
	root, mb, snap := bigInbox(b, n)
	other := New(Options{SpecialUse: map[string]string{}})
	defer other.Close()
	dmb, _ := openInbox(b, other, root)
	defer dmb.Close()
	have := len(snap.Messages())
	benchPickUp(b, mb, &have, func() {
		for j := 0; j < 1000; j++ {
			if _, err := dmb.Append(context.Background(), strings.NewReader("Subject: new\r\n\r\nnew mail\r\n"), backend.AppendOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCRLFSize: computing the CRLF size of an LF message.
func BenchmarkCRLFSize(b *testing.B) {
	msg := []byte(strings.Repeat("A line of a typical mail body, about 70 characters long..........\n", 16000))
	buf := make([]byte, measureBuf)
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		if _, err := crlfSize(bytes.NewReader(msg), buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenMessage streams a 1 MB LF message as CRLF.
func BenchmarkOpenMessage(b *testing.B) {
	root := filepath.Join(b.TempDir(), "Maildir")
	s := New(Options{SpecialUse: map[string]string{}})
	defer s.Close()
	ctx := context.Background()
	u, err := s.Open(ctx, backend.Account{Name: "bench", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		b.Fatal(err)
	}
	mb, _ := u.OpenMailbox(ctx, "INBOX")
	defer mb.Close()
	msg := strings.Repeat("A line of a typical mail body, about 70 characters long..........\n", 16000)
	r, err := mb.Append(ctx, strings.NewReader(msg), backend.AppendOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(r.Size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rc, err := mb.OpenMessage(ctx, r.UID)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != r.Size {
			b.Fatal(n, err)
		}
		rc.Close()
	}
}

// BenchmarkUidlistParse parses a 100,000-record dovecot-uidlist.
func BenchmarkUidlistParse(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("3 V1700000000 N100001 G0123456789abcdef0123456789abcdef\n")
	for i := 1; i <= benchMessages; i++ {
		fmt.Fprintf(&buf, "%d T1700000000 :1700000000.M%dP12345.bench.example.edu,S=1234,W=1260\n", i, i)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ul, _, err := parseUidlist(data)
		if err != nil || len(ul.recs) != benchMessages {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend100k: one APPEND/LMTP delivery into a 100,000-message
// INBOX: "append" adds one uidlist record, "rewrite" replaces the list.
func BenchmarkAppend100k(b *testing.B) {
	_, mb, _ := bigInbox(b, benchMessages)
	msg := "From: a@example.edu\nSubject: append\n\n" + strings.Repeat("body line\n", 200)
	benchModes(b, func(b *testing.B, rewrite bool) {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if rewrite {
				forceRewrite(mb)
			}
			if _, err := mb.Append(context.Background(), strings.NewReader(msg), backend.AppendOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreSync100k: one flag change then Sync (IMAP STORE) in a
// 100,000-message INBOX.
func BenchmarkStoreSync100k(b *testing.B) {
	_, mb, snap := bigInbox(b, benchMessages)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		uid := snap.Messages()[i%len(snap.Messages())].UID
		if _, err := mb.SetFlags(context.Background(), []backend.UID{uid}, backend.FlagsAdd, backend.FlagFlagged, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := mb.Sync(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
