package maildir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// postfixMaildir makes a Maildir whose new/ holds n LF files as Postfix
// writes them (no ",S=" or ",W=", no uidlist), of varied sizes, and
// returns the root and the CRLF size of each file by base name.
func postfixMaildir(t *testing.T, n int) (string, map[string]int64) {
	t.Helper()
	root := newMaildir(t)
	sizes := map[string]int64{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%d.V801I%xM%d.mx1", 1700000000+i, i, i)
		body := fmt.Sprintf("Return-Path: <a@example.edu>\nSubject: %d\n\n%s", i, strings.Repeat("body line\n", i%7))
		writeFile(t, filepath.Join(root, "new", name), body, time.Unix(int64(1700000000+i), 0))
		sizes[name] = int64(len(naiveCRLF([]byte(body))))
	}
	return root, sizes
}

// firstOpen syncs root's INBOX state as Mailbox.Sync does, without
// starting its measurer, and returns the state and the snapshot.
func firstOpen(t *testing.T, s *Store, root string) (*mboxState, *backend.Snapshot) {
	t.Helper()
	st := s.acquire(root, owner{uid: -1, gid: -1})
	t.Cleanup(func() { s.releaseState(st) })
	st.mu.Lock()
	defer st.mu.Unlock()
	snap, err := st.syncLocked(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	return st, snap
}

// waitMeasured syncs mb until its snapshot has every size; the measurer
// publishes it, closing the previous snapshot's Changed.
func waitMeasured(t *testing.T, mb backend.Mailbox) *backend.Snapshot {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		s, err := mb.Sync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(s.Messages(), func(m backend.Message) bool { return m.Size < 0 }) {
			return s
		}
		select {
		case <-s.Changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("the background measurer did not fill every size within 20s")
		}
	}
}

func mustSize(t *testing.T, mb backend.Mailbox, uid backend.UID) int64 {
	t.Helper()
	n, err := mb.MessageSize(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func uidlistRecords(t *testing.T, root string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n")[1:] {
		fields, key, _ := strings.Cut(line, " :")
		recs[key] = fields
	}
	return recs
}

// TestFirstOpenReadsNoMessageFile: opening a mailbox Postfix filled reads
// no message file: sizes are -1, dates exact, the uidlist has T and no W.
// Then the measurer reads each file once, publishes the sizes and records
// them as W, so a second process reads none.
func TestFirstOpenReadsNoMessageFile(t *testing.T) {
	root, want := postfixMaildir(t, 50)
	writeFile(t, filepath.Join(root, "cur", "1600000000.M1P1.host,S=10,W=12:2,S"), "Subject: \n\n", time.Unix(1600000000, 0))
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	st, snap := firstOpen(t, s, root)
	if n := st.sizeReads.Load(); n != 0 {
		t.Errorf("first open read %d message files, want none", n)
	}
	if len(snap.Messages()) != 51 {
		t.Fatalf("%d messages, want 51", len(snap.Messages()))
	}
	for _, m := range snap.Messages() {
		w, postfix := want[m.Key]
		switch {
		case !postfix && m.Size != 12:
			t.Errorf("%s: size %d, want 12 from its name", m.Key, m.Size)
		case postfix && m.Size != -1:
			t.Errorf("%s: size %d before measuring, want -1 (real size %d)", m.Key, m.Size, w)
		}
		var sec int64
		fmt.Sscanf(m.Key, "%d.", &sec)
		if m.InternalDate.Unix() != sec {
			t.Errorf("%s: INTERNALDATE %v, want the file's mtime %d", m.Key, m.InternalDate, sec)
		}
	}
	for key, fields := range uidlistRecords(t, root) {
		if _, postfix := want[key]; postfix && (strings.Contains(fields, " W") || !strings.Contains(fields, " T")) {
			t.Errorf("uidlist record %q :%s; want T and no W before measuring", fields, key)
		}
	}

	u := openUser(t, s, root)
	mb, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	got := waitMeasured(t, mb)
	for _, m := range got.Messages() {
		if w, ok := want[m.Key]; ok && m.Size != w {
			t.Errorf("%s: measured %d, want %d", m.Key, m.Size, w)
		}
	}
	if n := st.sizeReads.Load(); n != int64(len(want)) {
		t.Errorf("measuring read %d files, want each of the %d once", n, len(want))
	}
	for key, fields := range uidlistRecords(t, root) {
		if w, ok := want[key]; ok && !strings.Contains(fields, fmt.Sprintf(" W%d", w)) {
			t.Errorf("uidlist record %q :%s lacks W%d", fields, key, w)
		}
	}
	// Another process reads the sizes from the uidlist.
	st2, snap2 := firstOpen(t, newTestStore(t, Options{SpecialUse: map[string]string{}}), root)
	for _, m := range snap2.Messages() {
		if w, ok := want[m.Key]; ok && m.Size != w {
			t.Errorf("second process: %s size %d, want %d", m.Key, m.Size, w)
		}
	}
	if n := st2.sizeReads.Load(); n != 0 {
		t.Errorf("second process read %d message files, want none", n)
	}
}

func openUser(t *testing.T, s *Store, root string) backend.User {
	t.Helper()
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// TestMessageSizeExact: MessageSize, OpenMessage and Status agree with
// the CRLF conversion for every kind of line end, measuring each file once
// between them (the measurer is stopped here: the on-demand paths work
// alone).
func TestMessageSizeExact(t *testing.T) {
	cases := map[string]string{
		"lf":      "Subject: lf\n\nbody\n",
		"crlf":    "Subject: crlf\r\n\r\nbody\r\n",
		"mixed":   "Subject: mixed\r\n\nbare\rcr\nand\r\n\n",
		"empty":   "",
		"cr-end":  "Subject: x\n\nends in CR\r",
		"no-eol":  "Subject: x\n\nno final newline",
		"only-lf": "\n\n\n",
		// A CRLF split across two 64 KiB reads, and one split after.
		"boundary":  strings.Repeat("x", measureBuf-1) + "\r\n" + strings.Repeat("y\n", 1000),
		"boundary2": strings.Repeat("x", measureBuf) + "\n" + strings.Repeat("z\r\n", 1000),
	}
	root := newMaildir(t)
	want := map[string]string{}
	for name, body := range cases {
		key := "1700000000." + name + ".mx1"
		writeFile(t, filepath.Join(root, "new", key), body, time.Unix(1700000000, 0))
		want[key] = string(naiveCRLF([]byte(body)))
	}
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s.bg.stop() // on-demand paths only
	u := openUser(t, s, root)
	snap, mb := syncBox(t, u, "INBOX")
	st := mb.(*mailbox).st
	ctx := context.Background()
	var total int64
	for _, m := range snap.Messages() {
		if m.Size != -1 {
			t.Errorf("%s: snapshot size %d, want -1", m.Key, m.Size)
		}
		n := mustSize(t, mb, m.UID)
		if n != int64(len(want[m.Key])) {
			t.Errorf("%s: MessageSize %d, want %d", m.Key, n, len(want[m.Key]))
		}
		total += n
	}
	reads := st.sizeReads.Load()
	if reads != int64(len(cases)) {
		t.Errorf("%d reads for %d messages", reads, len(cases))
	}
	for _, m := range snap.Messages() {
		if n := mustSize(t, mb, m.UID); n != int64(len(want[m.Key])) {
			t.Errorf("%s: second MessageSize %d", m.Key, n)
		}
		if got := read(t, mb, m.UID); got != want[m.Key] {
			t.Errorf("%s: OpenMessage gives %d bytes, want %d", m.Key, len(got), len(want[m.Key]))
		}
	}
	stat, err := mb.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stat.Size != total {
		t.Errorf("Status.Size %d, want %d", stat.Size, total)
	}
	if n := st.sizeReads.Load(); n != reads {
		t.Errorf("%d more reads after every size was measured, want none", n-reads)
	}

	// OpenMessage and Status measure by themselves too.
	s2 := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s2.bg.stop()
	snap2, mb2 := syncBox(t, openUser(t, s2, root), "INBOX")
	if _, err := mb2.Status(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range snap2.Messages() {
		if got := read(t, mb2, m.UID); got != want[m.Key] {
			t.Errorf("%s: OpenMessage of an unmeasured message gives %q, want %q", m.Key, trunc(got), trunc(want[m.Key]))
		}
	}
	if n := mb2.(*mailbox).st.sizeReads.Load(); n != int64(len(cases)) {
		t.Errorf("Status then OpenMessage read %d files, want each of %d once", n, len(cases))
	}

	// OpenMessage of an unmeasured message streams to the end without
	// measuring first and tells the size: at the end, or at once when the
	// whole file came in its first read. A big file's stream closed early
	// tells nothing.
	s3 := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s3.bg.stop()
	snap3, mb3 := syncBox(t, openUser(t, s3, root), "INBOX")
	st3 := mb3.(*mailbox).st
	for _, m := range snap3.Messages() {
		if strings.Contains(m.Key, "boundary") || strings.Contains(m.Key, ".lf.") {
			rc, err := mb3.OpenMessage(ctx, m.UID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rc, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			rc.Close()
			continue
		}
		if got := read(t, mb3, m.UID); got != want[m.Key] {
			t.Errorf("%s: OpenMessage to EOF gives %q, want %q", m.Key, trunc(got), trunc(want[m.Key]))
		}
	}
	if n := st3.sizeReads.Load(); n != 0 {
		t.Errorf("OpenMessage read %d files for their size first, want none", n)
	}
	for _, m := range snap3.Messages() {
		if n := mustSize(t, mb3, m.UID); n != int64(len(want[m.Key])) {
			t.Errorf("%s: MessageSize after streaming %d, want %d", m.Key, n, len(want[m.Key]))
		}
	}
	if n := st3.sizeReads.Load(); n != 2 {
		t.Errorf("MessageSize read %d files after the streams, want 2 (the two big ones closed early)", n)
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// syncLog collects log output from several goroutines.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestMeasureExpunged: a file another process removed before it was
// measured is skipped by the measurer without a complaint, and
// MessageSize reports it expunged.
func TestMeasureExpunged(t *testing.T) {
	root, want := postfixMaildir(t, 20)
	logs := &syncLog{}
	s := newTestStore(t, Options{SpecialUse: map[string]string{}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	st, snap := firstOpen(t, s, root)
	gone := snap.Messages()[5]
	if err := os.Remove(filepath.Join(root, "new", gone.Key)); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.startMeasuring()
	started := st.measuring
	st.mu.Unlock()
	if !started {
		t.Fatal("no measurer started for a snapshot with unknown sizes")
	}
	waitIdle(t, st)
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("measurer complained about a vanished file:\n%s", logs)
	}
	st.mu.Lock()
	for _, m := range st.msgs {
		if m.Key != gone.Key && m.Size != want[m.Key] {
			t.Errorf("%s: size %d, want %d", m.Key, m.Size, want[m.Key])
		}
	}
	st.mu.Unlock()

	// MessageSize of a message whose file goes before it is measured.
	postfixFile(t, root, "1800000000.V801I1M1.mx1")
	s2 := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s2.bg.stop()
	snap2, mb := syncBox(t, openUser(t, s2, root), "INBOX")
	victim := snap2.Messages()[len(snap2.Messages())-1]
	if victim.Key != "1800000000.V801I1M1.mx1" || victim.Size != -1 {
		t.Fatalf("last message %+v, want the new one, not measured", victim)
	}
	if err := os.Remove(filepath.Join(root, "new", victim.Key)); err != nil {
		t.Fatal(err)
	}
	if n, err := mb.MessageSize(context.Background(), victim.UID); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("MessageSize of an expunged message: %d, %v; want ErrNoSuchMessage", n, err)
	}
	if _, err := mb.OpenMessage(context.Background(), victim.UID); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("OpenMessage of an expunged message: %v; want ErrNoSuchMessage", err)
	}
}

// TestMeasurerPublishesSameMessages: the measurer's snapshot closes the
// old one's Changed and differs from it only in sizes; no listing.
func TestMeasurerPublishesSameMessages(t *testing.T) {
	root, want := postfixMaildir(t, 30)
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	_, s0 := firstOpen(t, s, root)
	_, mb := syncBox(t, openUser(t, s, root), "INBOX") // starts the measurer
	n0 := listings(mb)
	select {
	case <-s0.Changed:
	case <-time.After(20 * time.Second):
		t.Fatal("the measurer did not close Changed within 20s")
	}
	s1, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.Messages()) != len(s0.Messages()) {
		t.Fatalf("%d messages after measuring, %d before", len(s1.Messages()), len(s0.Messages()))
	}
	for i, m := range s1.Messages() {
		o := s0.Messages()[i]
		if o.Size != -1 {
			t.Errorf("the first snapshot was changed in place: %+v", o)
		}
		o.Size = want[o.Key]
		if m.UID != o.UID || m.Key != o.Key || m.Flags != o.Flags || !m.InternalDate.Equal(o.InternalDate) || m.Size != o.Size {
			t.Errorf("after measuring %+v, want %+v", m, o)
		}
	}
	if n := listings(mb); n != n0 {
		t.Errorf("%d listings to pick up measured sizes, want none", n-n0)
	}
}

// TestMeasureOutlivesLogout: a session that logs out at once does not
// throw the measurement away: it completes and is recorded.
func TestMeasureOutlivesLogout(t *testing.T) {
	root, want := postfixMaildir(t, 300)
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	u := openUser(t, s, root)
	mb, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	mb.Close()
	u.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		recs := uidlistRecords(t, root)
		n := 0
		for key, fields := range recs {
			if strings.Contains(fields, fmt.Sprintf(" W%d ", want[key])) {
				n++
			}
		}
		s.mu.Lock()
		left := len(s.boxes)
		s.mu.Unlock()
		if n == len(want) && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the logout: %d of %d sizes recorded, %d mailbox states kept (want all, none)", n, len(want), left)
		}
	}
}

// TestCloseStopsMeasurer: Store.Close stops a running measurer and waits
// for it: no goroutine outlives the Store.
func TestCloseStopsMeasurer(t *testing.T) {
	root, _ := postfixMaildir(t, 3000)
	before := runtime.NumGoroutine()
	s := New(Options{SpecialUse: map[string]string{}})
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	st := mb.(*mailbox).st
	mb.Close()
	u.Close()
	// Close while it reads (past its initial wait).
	for deadline := time.Now().Add(20 * time.Second); st.sizeReads.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the measurer read nothing within 20s")
		}
	}
	st.mu.Lock()
	running := st.measuring
	st.mu.Unlock()
	t.Logf("measurer running at Close: %v, %d of 3000 files read", running, st.sizeReads.Load())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	running = st.measuring
	st.mu.Unlock()
	if running {
		t.Error("a measurer still runs after Store.Close returned")
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}

// TestCopyMeasuresUnknownSize: copying or moving a message of unknown size
// names the new file with its exact ",W=".
func TestCopyMeasuresUnknownSize(t *testing.T) {
	root, want := postfixMaildir(t, 4)
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	s.bg.stop()
	u := openUser(t, s, root)
	ctx := context.Background()
	if err := u.CreateMailbox(ctx, "Archive", ""); err != nil {
		t.Fatal(err)
	}
	snap, mb := syncBox(t, u, "INBOX")
	if _, err := mb.Copy(ctx, []backend.UID{snap.Messages()[0].UID}, "Archive"); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Move(ctx, []backend.UID{snap.Messages()[1].UID}, "Archive"); err != nil {
		t.Fatal(err)
	}
	arch, amb := syncBox(t, u, "Archive")
	if len(arch.Messages()) != 2 {
		t.Fatalf("Archive has %d messages, want 2", len(arch.Messages()))
	}
	for i, m := range arch.Messages() {
		w := want[snap.Messages()[i].Key]
		if got, ok := sizeField(m.Key, 'W'); !ok || got != w || m.Size != w {
			t.Errorf("copy %d: name %s, size %d; want W=%d", i, m.Key, m.Size, w)
		}
		if body := read(t, amb, m.UID); int64(len(body)) != w {
			t.Errorf("copy %d reads %d bytes, want %d", i, len(body), w)
		}
	}
}

// TestDovecotAgreesOnMeasuredSizes: after Roost measured Postfix files and
// recorded W fields, a private Dovecot reading the Maildir shows the same
// sizes and dates and complains about nothing.
func TestDovecotAgreesOnMeasuredSizes(t *testing.T) {
	home := t.TempDir()
	root := filepath.Join(home, "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	bodies := []string{"Subject: lf\n\nbody\n", "Subject: crlf\r\n\r\nbody\r\n", "Subject: mixed\r\n\nx\n\r\n", "Subject: big\n\n" + strings.Repeat("line\n", 20000)}
	for i, b := range bodies {
		writeFile(t, filepath.Join(root, "new", fmt.Sprintf("%d.V801I%dM%d.mx1", 1700000000+i, i, i)), b, time.Unix(int64(1700000000+i), 0))
	}
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	u := openUser(t, s, root)
	mb, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	waitMeasured(t, mb)
	mb.Close()
	for key, fields := range uidlistRecords(t, root) {
		if !strings.Contains(fields, " W") {
			t.Errorf("uidlist record %q :%s has no W", fields, key)
		}
	}
	mine := roostView(t, u)
	u.Close()
	dove := runDovecot(t, home)
	if dove.boxes["INBOX"] == nil {
		t.Fatalf("Dovecot showed no INBOX: %+v", dove)
	}
	t.Logf("Dovecot: %q", dove.boxes["INBOX"].msgs)
	// The view script also looks at the fixture's folders, absent here.
	dove.log = slices.DeleteFunc(dove.log, func(l string) bool { return strings.Contains(l, "NO Mailbox doesn't exist") })
	compareViews(t, dove, mine, "Dovecot reading Roost's measured sizes")
}

// TestMeasureKeepsOthersRecords: another process appends to the uidlist
// while this one measures; the measurer's rewrite keeps that record, and
// a delivery after the measurement is picked up without a full listing
// and measured in turn.
func TestMeasureKeepsOthersRecords(t *testing.T) {
	root, want := postfixMaildir(t, 40)
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	st, _ := firstOpen(t, s, root)
	other := newTestStore(t, Options{SpecialUse: map[string]string{}})
	other.bg.stop() // this process alone measures
	_, omb := syncBox(t, openUser(t, other, root), "INBOX")
	res, err := omb.Append(context.Background(), strings.NewReader("Subject: other\n\nx\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, mb := syncBox(t, openUser(t, s, root), "INBOX") // starts the measurer
	snap := waitMeasured(t, mb)
	if snap.Find(res.UID) < 0 {
		t.Errorf("the other process's message UID %d is missing after measuring", res.UID)
	}
	recs := uidlistRecords(t, root)
	if len(recs) != 41 {
		t.Errorf("uidlist has %d records, want 41", len(recs))
	}
	for key, fields := range recs {
		if w, ok := want[key]; ok && !strings.Contains(fields, fmt.Sprintf(" W%d ", w)) {
			t.Errorf("uidlist record %q :%s lacks W%d", fields, key, w)
		}
	}

	n0 := listings(mb)
	postfixFile(t, root, "1800000000.V801I1M1.mx1")
	s1, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := s1.Messages()[len(s1.Messages())-1]
	if last.Key != "1800000000.V801I1M1.mx1" || last.Size != -1 {
		t.Errorf("new delivery %+v, want it with size -1", last)
	}
	if n := listings(mb); n != n0 {
		t.Errorf("%d full listings to pick up a delivery into a measured mailbox, want none", n-n0)
	}
	ul := statID(filepath.Join(root, uidlistName))
	waitIdle(t, st)
	wantLast := int64(len(naiveCRLF([]byte("Return-Path: <a@example.edu>\nSubject: 1800000000.V801I1M1.mx1\n\nbody\n"))))
	if n := mustSize(t, mb, last.UID); n != wantLast {
		t.Errorf("new delivery measured %d, want %d", n, wantLast)
	}
	if n := st.sizeReads.Load(); n != int64(len(want))+1 {
		t.Errorf("%d files read, want %d (each once: the measurer's note serves MessageSize)", n, len(want)+1)
	}
	// One size is not worth copying the list and rewriting the uidlist
	// for: another process measures that file itself, and the next
	// rebuild of the list takes the size in.
	if now := statID(filepath.Join(root, uidlistName)); now != ul {
		t.Errorf("the uidlist was rewritten for the size of one new message")
	}
	st.mu.Lock()
	_, err = st.syncLocked(context.Background(), true)
	st.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := waitMeasured(t, mb).Messages(); got[len(got)-1].Size != wantLast {
		t.Errorf("after a rebuild the new delivery has size %d, want %d", got[len(got)-1].Size, wantLast)
	}
}

// waitIdle waits until st's measurer, if any, has finished.
func waitIdle(t *testing.T, st *mboxState) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st.mu.Lock()
		busy := st.measuring
		st.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("measurer still running after 20s")
		}
	}
}

// TestMeasurersShareSlots: a Store measures at most measureSlots
// mailboxes at once; another waits for a slot (its sizes stay available
// on demand) and a Store.Close ends the wait.
func TestMeasurersShareSlots(t *testing.T) {
	root, sizes := postfixMaildir(t, 20)
	s, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()
	for i := 0; i < measureSlots; i++ {
		if !s.bg.acquire(ctx) {
			t.Fatal("no free measuring slot in a new Store")
		}
	}
	snap, mb := syncBox(t, u, "INBOX")
	st := mb.(*mailbox).st
	time.Sleep(measureDelay + 300*time.Millisecond)
	if n := st.sizeReads.Load(); n != 0 {
		t.Fatalf("the measurer read %d files without a slot", n)
	}
	m := snap.Messages()[0]
	if got := mustSize(t, mb, m.UID); got != sizes[m.Key] {
		t.Errorf("MessageSize while the measurer waits = %d, want %d", got, sizes[m.Key])
	}
	s.bg.release()
	waitMeasured(t, mb)
	s.bg.release()

	// A measurer waiting for a slot returns when the Store closes.
	for i := 0; i < measureSlots; i++ {
		s.bg.acquire(ctx)
	}
	root2, _ := postfixMaildir(t, 5)
	u2, err := s.Open(ctx, backend.Account{Name: "bob", Maildir: root2, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	syncBox(t, u2, "INBOX")
	time.Sleep(measureDelay + 100*time.Millisecond)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Store.Close waits for a measurer that waits for a slot")
	}
}

// TestNoSizeMeasurer: a Store made for delivery measures nothing in the
// background; sizes stay -1 in its snapshots and MessageSize still
// measures on demand.
func TestNoSizeMeasurer(t *testing.T) {
	root, sizes := postfixMaildir(t, 20)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}, NoSizeMeasurer: true})
	_, mb := syncBox(t, u, "INBOX")
	st := mb.(*mailbox).st
	time.Sleep(measureDelay + 300*time.Millisecond)
	if n := st.sizeReads.Load(); n != 0 {
		t.Errorf("%d files read in the background, want none", n)
	}
	st.mu.Lock()
	running := st.measuring
	st.mu.Unlock()
	if running {
		t.Error("a measurer runs in a Store with NoSizeMeasurer")
	}
	snap, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := snap.Messages()[len(snap.Messages())-1]
	if m.Size != -1 {
		t.Errorf("Size = %d, want -1 (unmeasured)", m.Size)
	}
	if got := mustSize(t, mb, m.UID); got != sizes[m.Key] {
		t.Errorf("MessageSize = %d, want %d", got, sizes[m.Key])
	}
}
