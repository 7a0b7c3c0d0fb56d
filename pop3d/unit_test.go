package pop3d

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/textproto"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/roost-mail/roost/backend"
	"golang.org/x/sys/unix"
)

func TestUIDLFormat(t *testing.T) {
	m := &backend.Message{UID: 1, Key: "1795628282.M554387P26027.vm,S=294,W=308"}
	const uidv = 1795628282 // 0x6b071cfa
	for _, tc := range []struct{ format, want string }{
		{"", "000000016b071cfa"},                                       // Dovecot's default, observed
		{"%08Xu%08Xv", "000000016b071cfa"},                             // spelled out
		{"%{uid | hex(8)}%{uidvalidity | hex(8)}", "000000016b071cfa"}, // Dovecot 2.4
		{"%v.%u", "1795628282.1"},                                      // Cyrus default
		{"UID%u-%v", "UID1-1795628282"},                                // Courier 5
		{"%v-%u", "1795628282-1"},                                      // old Courier
		{"%u", "1"},
		{"%f", "1795628282.M554387P26027.vm,S=294,W=308"},
		{"%g", "1795628282.M554387P26027.vm,S=294,W=308"},
		{"%{filename}", "1795628282.M554387P26027.vm,S=294,W=308"},
		{"%4f", "1795"},
		{"f%2.3f", "f956"},
		{"w%-3.3f", "w308"},
		{"%UXv", "6B071CFA"},
		{"%Xu", "1"},
		{"%04u%%", "0001%"},
	} {
		uf, err := parseUIDLFormat(cmpOr(tc.format, DefaultUIDLFormat))
		if err != nil {
			t.Errorf("%q: %v", tc.format, err)
			continue
		}
		if got := string(uf.append(nil, m, uidv)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.format, got, tc.want)
		}
	}
	// A migrated UIDL wins over the format.
	uf, _ := parseUIDLFormat(DefaultUIDLFormat)
	mig := *m
	mig.UIDL = "UID7-1234567890"
	if got := string(uf.append(nil, &mig, uidv)); got != "UID7-1234567890" {
		t.Errorf("migrated UIDL: got %q", got)
	}
	// Full 32-bit values.
	big := &backend.Message{UID: 0xfedcba98}
	if got := string(uf.append(nil, big, 0xffffffff)); got != "fedcba98ffffffff" {
		t.Errorf("wide UID: got %q", got)
	}
	for _, bad := range []string{"%m", "%x", "abc", "%", "%08", "%{nope}", "%{uid | md5}", "a b%u", "%-3u", "%{uid", "%1.u", "%071u"} {
		if _, err := parseUIDLFormat(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct{ line, name, args string }{
		{"stat", "STAT", ""},
		{"LIST 1", "LIST", "1"},
		{"PASS my secret pw", "PASS", "my secret pw"},
		{"top 1 10", "TOP", "1 10"},
		{"CAPA ", "CAPA", ""},
	} {
		name, args, err := parseCommand(tc.line)
		if err != nil || name != tc.name || args != tc.args {
			t.Errorf("%q: got %q %q %v", tc.line, name, args, err)
		}
	}
	for _, bad := range []string{"", " STAT", "STATS", "GET/ HTTP/1.1", "ST\x00T", "ÄBC"} {
		if _, _, err := parseCommand(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// dotDecode undoes dot-stuffing with net/textproto, the reference reader.
func dotDecode(t testing.TB, b []byte) []byte {
	t.Helper()
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	out, err := io.ReadAll(r.DotReader())
	if err != nil {
		t.Fatalf("DotReader: %v on %q", err, b)
	}
	return out
}

func TestCopyMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{".a\r\n..b\r\n.\r\nc.\r\n", "..a\r\n...b\r\n..\r\nc.\r\n.\r\n"},
		{"no final line end", "no final line end\r\n.\r\n"},
		{"", ".\r\n"},
		// LF line ends, as Postfix writes them, and mixtures.
		{"a\nb\n", "a\r\nb\r\n.\r\n"},
		{".a\n..b\n.\nc.\n", "..a\r\n...b\r\n..\r\nc.\r\n.\r\n"},
		{"\n\n.\n", "\r\n\r\n..\r\n.\r\n"},
		{"a\r\nb\nc\r\n.d", "a\r\nb\r\nc\r\n..d\r\n.\r\n"},
		{"bare\rCR\r\r\n", "bare\rCR\r\r\n.\r\n"},
		{"ends in CR\r", "ends in CR\r\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
	} {
		size := crlfSize(tc.in)
		for _, r := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader, iotest.HalfReader, iotest.DataErrReader,
		} {
			for _, bufSize := range []int{16, 17, 4096} {
				var out bytes.Buffer
				w := newWireBuffer(bufSize)
				w.reset(&out)
				n, err := copyMessage(w, r(strings.NewReader(tc.in)), make([]byte, 7), size)
				w.Flush()
				if err != nil || n != size || out.String() != tc.want {
					t.Errorf("%q: got %q n=%d err=%v, want %q (%d octets)", tc.in, out.String(), n, err, tc.want, size)
				}
			}
		}
	}
}

// crlfSize is the length of s with every bare LF made CRLF.
func crlfSize(s string) int64 {
	n := int64(len(s))
	for i := range len(s) {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			n++
		}
	}
	return n
}

// TestCopyMessageSize: the recorded size rules. A longer file is cut
// there; a shorter one is an error, so the response is never terminated
// and the client cannot take the part for the whole.
func TestCopyMessageSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		size int64
		want string
	}{
		{"a\nb\nc\n", 6, "a\r\nb\r\n.\r\n"},
		{"a\nb\nc\n", 5, "a\r\nb\r\r\n.\r\n"}, // cut inside the inserted CRLF
		{"a\n.b\n", 3, "a\r\n.\r\n"},          // cut before a stuffed line
		{"a\n.b\n", 4, "a\r\n..\r\n.\r\n"},
		{"abc", 0, ".\r\n"},
	} {
		var out bytes.Buffer
		w := newWireBuffer(64)
		w.reset(&out)
		n, err := copyMessage(w, strings.NewReader(tc.in), make([]byte, 2), tc.size)
		w.Flush()
		if err != nil || n != tc.size || out.String() != tc.want {
			t.Errorf("%q cut at %d: got %q n=%d err=%v, want %q", tc.in, tc.size, out.String(), n, err, tc.want)
		}
	}
	var out bytes.Buffer
	w := newWireBuffer(64)
	w.reset(&out)
	n, err := copyMessage(w, strings.NewReader("a\nb\n"), make([]byte, 64), 7)
	w.Flush()
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 6 || strings.HasSuffix(out.String(), ".\r\n") {
		t.Errorf("short file: got %q n=%d err=%v, want an unterminated 6 octets and ErrUnexpectedEOF", out.String(), n, err)
	}
}

// TestWireBufferError: a failed socket write stops the copy and is a
// *writeError, so sendMessage does not blame the store.
func TestWireBufferError(t *testing.T) {
	w := newWireBuffer(16)
	w.reset(failWriter{})
	_, err := copyMessage(w, strings.NewReader(strings.Repeat("line\n", 100)), make([]byte, 8), 600)
	var we *writeError
	if !errors.As(err, &we) {
		t.Fatalf("got %v, want a *writeError", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestCopyTop(t *testing.T) {
	msg := "Subject: x\r\nFrom: a\r\n\r\nl1\r\n.l2\r\nl3\r\n"
	for _, tc := range []struct {
		lines int64
		want  string
	}{
		{0, "Subject: x\r\nFrom: a\r\n\r\n.\r\n"},
		{2, "Subject: x\r\nFrom: a\r\n\r\nl1\r\n..l2\r\n.\r\n"},
		{99, "Subject: x\r\nFrom: a\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n"},
	} {
		var out bytes.Buffer
		w := newWireBuffer(4096)
		w.reset(&out)
		if _, err := copyTop(w, iotest.HalfReader(strings.NewReader(msg)), tc.lines); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if out.String() != tc.want {
			t.Errorf("TOP %d: got %q, want %q", tc.lines, out.String(), tc.want)
		}
	}
	// Headers only, no blank line, no final CRLF.
	var out bytes.Buffer
	w := newWireBuffer(4096)
	w.reset(&out)
	copyTop(w, strings.NewReader("Subject: x\r\n.X: y"), 0)
	w.Flush()
	if want := "Subject: x\r\n..X: y\r\n.\r\n"; out.String() != want {
		t.Errorf("headers only: got %q, want %q", out.String(), want)
	}
	// A header line longer than the reader's buffer stays one line.
	long := "X: " + strings.Repeat("y", 20000) + "\r\n\r\n.body\r\n"
	out.Reset()
	copyTop(w, strings.NewReader(long), 1)
	w.Flush()
	if want := strings.Replace(long, "\n.body", "\n..body", 1) + ".\r\n"; out.String() != want {
		t.Errorf("long header: got %d octets, want %d", out.Len(), len(want))
	}
}

func TestSASL(t *testing.T) {
	p := newSASLServer("PLAIN")
	if c, done, err := p.next(nil); err != nil || done || len(c) != 0 {
		t.Fatalf("PLAIN without initial response: %q %v %v", c, done, err)
	}
	if _, done, err := p.next([]byte("\x00alice\x00pw with space")); err != nil || !done {
		t.Fatalf("PLAIN: %v %v", done, err)
	}
	if u, pw := p.credentials(); u != "alice" || pw != "pw with space" {
		t.Errorf("PLAIN credentials %q %q", u, pw)
	}
	for _, bad := range []string{"alice\x00pw", "\x00\x00pw", "\x00alice\x00", "bob\x00alice\x00pw", "\x00a\x00b\x00c", "\x00\xff\x00pw"} {
		if _, _, err := newSASLServer("PLAIN").next([]byte(bad)); err == nil {
			t.Errorf("PLAIN %q accepted", bad)
		}
	}
	l := newSASLServer("LOGIN")
	steps := []struct {
		resp []byte
		want string
	}{{nil, "Username:"}, {[]byte("bob"), "Password:"}}
	for _, st := range steps {
		c, done, err := l.next(st.resp)
		if err != nil || done || string(c) != st.want {
			t.Fatalf("LOGIN step: %q %v %v", c, done, err)
		}
	}
	if _, done, err := l.next([]byte("secret")); !done || err != nil {
		t.Fatalf("LOGIN end: %v %v", done, err)
	}
	if u, pw := l.credentials(); u != "bob" || pw != "secret" {
		t.Errorf("LOGIN credentials %q %q", u, pw)
	}
	// Initial response = user name.
	l = newSASLServer("LOGIN")
	if c, _, err := l.next([]byte("bob")); err != nil || string(c) != "Password:" {
		t.Errorf("LOGIN initial response: %q %v", c, err)
	}
	if newSASLServer("CRAM-MD5") != nil {
		t.Error("unknown mechanism accepted")
	}
	if _, err := decodeResponse("*"); err != errSASLCancelled {
		t.Errorf("* = %v", err)
	}
	if b, err := decodeResponse("="); err != nil || len(b) != 0 || b == nil {
		t.Errorf("= gives %q %v", b, err)
	}
	if _, err := decodeResponse("!!"); err == nil {
		t.Error("bad base64 accepted")
	}
}

func TestLoginDelaySeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{time.Second: 1, 1500 * time.Millisecond: 2, 5 * time.Minute: 300, time.Nanosecond: 1} {
		if got := loginDelaySeconds(d); got != want {
			t.Errorf("%v: %d, want %d", d, got, want)
		}
	}
}

// TestPOP3OrderSort checks pop3Order against a stable sort by (order,
// with none last) on shuffled orders, ties and Dovecot's maximum value,
// and that the snapshot's slice is left alone.
func TestPOP3OrderSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := r.IntN(40)
		msgs := make([]backend.Message, n)
		for i := range msgs {
			msgs[i].UID = backend.UID(10 * (i + 1))
			switch r.IntN(4) {
			case 0: // none
			case 1:
				msgs[i].POP3Order = math.MaxUint32
			default:
				msgs[i].POP3Order = uint32(1 + r.IntN(n+1))
			}
		}
		orig := slices.Clone(msgs)
		want := slices.Clone(msgs)
		key := func(m backend.Message) uint64 {
			if m.POP3Order == 0 {
				return math.MaxUint32
			}
			return uint64(m.POP3Order)
		}
		slices.SortStableFunc(want, func(a, b backend.Message) int { return cmp.Compare(key(a), key(b)) })
		got := pop3Order(msgs)
		if !slices.EqualFunc(got, want, func(a, b backend.Message) bool { return a.UID == b.UID }) {
			t.Fatalf("round %d: got %v, want %v", round, uids(got), uids(want))
		}
		if !slices.EqualFunc(msgs, orig, func(a, b backend.Message) bool { return a.UID == b.UID }) {
			t.Fatalf("round %d: the snapshot's slice was reordered", round)
		}
	}
}

func uids(msgs []backend.Message) []backend.UID {
	var u []backend.UID
	for _, m := range msgs {
		u = append(u, m.UID)
	}
	return u
}

// BenchmarkCopyMessage measures the conversion alone (50 MB in memory,
// with LF and with CRLF line ends), against a plain chunked copy through
// the same buffers. cpu-ns/op is the thread's CPU time, which other
// processes on a busy machine disturb far less than the wall clock.
func BenchmarkCopyMessage(b *testing.B) {
	var msg bytes.Buffer
	line := strings.Repeat("abcdefghij", 7) + "\n"
	for i := 0; msg.Len() < 50<<20; i++ {
		if i%100 == 0 {
			msg.WriteString(".dot line\n")
		}
		msg.WriteString(line)
	}
	lf := msg.Bytes()
	crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
	w := newWireBuffer(256 << 10)
	w.reset(io.Discard)
	in := make([]byte, 128<<10)
	for _, tc := range []struct {
		name string
		copy func()
	}{
		{"lf", func() { copyMessage(w, bytes.NewReader(lf), in, int64(len(crlf))) }},
		{"crlf", func() { copyMessage(w, bytes.NewReader(crlf), in, int64(len(crlf))) }},
		// Hide ReadFrom/WriteTo so the copy moves through in like
		// copyMessage does.
		{"plain-copy", func() {
			io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{bytes.NewReader(crlf)}, in)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(len(crlf)))
			start := threadCPU(b)
			for b.Loop() {
				tc.copy()
			}
			b.ReportMetric(float64(threadCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// threadCPU returns the CPU time the calling thread has used.
func threadCPU(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Skip("no thread CPU clock:", err)
	}
	return time.Duration(ts.Nano())
}

// failAfter accepts limit octets, then fails every write.
type failAfter struct {
	limit, got int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.got+len(p) > f.limit {
		return 0, errors.New("connection reset")
	}
	f.got += len(p)
	return len(p), nil
}

// TestWireBufferWriteFails: with a buffer in flight while the next one
// fills, a failed socket write still stops the copy (one buffer late at
// most), comes back as a *writeError, and leaves no write pending.
func TestWireBufferWriteFails(t *testing.T) {
	msg := strings.Repeat("a line of a message\n", 50000) // 1 MB
	dst := &failAfter{limit: 100}
	w := newWireBuffer(64)
	w.reset(dst)
	n, err := copyMessage(w, strings.NewReader(msg), make([]byte, 4096), crlfSize(msg))
	var we *writeError
	if !errors.As(err, &we) {
		t.Fatalf("copy into a failing connection: n=%d err=%v, want a *writeError", n, err)
	}
	if n > 64*4 {
		t.Errorf("copied %d octets past a failure at 100 with 64-octet buffers", n)
	}
	if ferr := w.Flush(); !errors.As(ferr, &we) || w.pending {
		t.Errorf("Flush after the failure: %v, pending %v", ferr, w.pending)
	}
}
