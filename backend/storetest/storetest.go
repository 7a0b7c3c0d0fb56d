// Package storetest is the conformance suite for backend.Store
// implementations: every method of backend.User and backend.Mailbox, their
// sentinel errors, and the invariants in package backend's doc (UIDs
// ascend and are never reused, sizes are exact CRLF sizes, a failed
// Append leaves nothing, Changed is closed on change). Run it from the
// implementation's tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (backend.Store, backend.Account) { ... })
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// Factory returns a new, empty store and an account on it. The suite may
// change the account's quota limits before opening it.
type Factory func(t *testing.T) (backend.Store, backend.Account)

// Run runs every conformance test as a subtest of t.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newStore Factory)
	}{
		{"OpenCreatesInbox", testOpenCreatesInbox},
		{"AppendAndRead", testAppendAndRead},
		{"UIDsNeverReused", testUIDsNeverReused},
		{"SetFlags", testSetFlags},
		{"Expunge", testExpunge},
		{"CopyAndMove", testCopyAndMove},
		{"CreateDeleteRename", testCreateDeleteRename},
		{"InvalidNames", testInvalidNames},
		{"RenameInbox", testRenameInbox},
		{"Subscriptions", testSubscriptions},
		{"Quota", testQuota},
		{"Lock", testLock},
		{"Changed", testChanged},
		{"Status", testStatus},
		{"ConcurrentAppend", testConcurrentAppend},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openUser(t *testing.T, newStore Factory, modify func(*backend.Account)) (backend.Store, backend.User, backend.Account) {
	t.Helper()
	s, acct := newStore(t)
	if modify != nil {
		modify(&acct)
	}
	u, err := s.Open(ctxT(t), acct)
	if err != nil {
		t.Fatalf("Open(%+v): %v", acct, err)
	}
	t.Cleanup(func() { u.Close() })
	return s, u, acct
}

func openBox(t *testing.T, u backend.User, name string) backend.Mailbox {
	t.Helper()
	mb, err := u.OpenMailbox(ctxT(t), name)
	if err != nil {
		t.Fatalf("OpenMailbox(%q): %v", name, err)
	}
	t.Cleanup(func() { mb.Close() })
	return mb
}

func mustSync(t *testing.T, mb backend.Mailbox) *backend.Snapshot {
	t.Helper()
	s, err := mb.Sync(ctxT(t))
	if err != nil {
		t.Fatalf("Sync(%s): %v", mb.Name(), err)
	}
	checkSummary(t, s)
	return s
}

// checkSummary fails unless what a snapshot tells without its list (IMAP
// SELECT answers from it) agrees with the list.
func checkSummary(t *testing.T, s *backend.Snapshot) {
	t.Helper()
	got, want := s.Summary(), backend.Summarize(s.Messages())
	got.Keywords, want.Keywords = slices.Sorted(slices.Values(got.Keywords)), slices.Sorted(slices.Values(want.Keywords))
	if s.Len() != len(s.Messages()) || !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot summary %+v (Len %d), its messages give %+v (%d)", got, s.Len(), want, len(s.Messages()))
	}
}

// msg returns a small LF-terminated message, as Postfix would store it.
func msg(subject string) string {
	return "From: a@example.edu\nTo: b@example.edu\nSubject: " + subject + "\n\nbody of " + subject + "\n"
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func appendMsg(t *testing.T, mb backend.Mailbox, body string, opts backend.AppendOptions) backend.AppendResult {
	t.Helper()
	res, err := mb.Append(ctxT(t), strings.NewReader(body), opts)
	if err != nil {
		t.Fatalf("Append to %s: %v", mb.Name(), err)
	}
	return res
}

func readMsg(t *testing.T, mb backend.Mailbox, uid backend.UID) string {
	t.Helper()
	rc, err := mb.OpenMessage(ctxT(t), uid)
	if err != nil {
		t.Fatalf("OpenMessage(%d): %v", uid, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read message %d: %v", uid, err)
	}
	return string(b)
}

func names(infos []backend.MailboxInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	return out
}

func findInfo(infos []backend.MailboxInfo, name string) (backend.MailboxInfo, bool) {
	for _, i := range infos {
		if i.Name == name {
			return i, true
		}
	}
	return backend.MailboxInfo{}, false
}

func testOpenCreatesInbox(t *testing.T, newStore Factory) {
	_, u, acct := openUser(t, newStore, nil)
	if u.Name() != acct.Name {
		t.Errorf("Name() = %q, want %q", u.Name(), acct.Name)
	}
	infos, err := u.ListMailboxes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 || infos[0].Name != "INBOX" {
		t.Fatalf("ListMailboxes = %v, want INBOX first", names(infos))
	}
	if !sort.SliceIsSorted(infos[1:], func(i, j int) bool { return infos[1+i].Name < infos[1+j].Name }) {
		t.Errorf("ListMailboxes not sorted after INBOX: %v", names(infos))
	}
	for _, n := range []string{"INBOX", "inbox", "InBoX"} {
		mb := openBox(t, u, n)
		if mb.Name() != "INBOX" {
			t.Errorf("OpenMailbox(%q).Name() = %q, want INBOX", n, mb.Name())
		}
		s := mustSync(t, mb)
		if len(s.Messages()) != 0 || s.UIDValidity == 0 || s.UIDNext == 0 {
			t.Errorf("new INBOX snapshot = %+v, want empty with UIDVALIDITY and UIDNEXT set", s)
		}
	}
	if _, err := u.OpenMailbox(ctxT(t), "NoSuchBox"); !errors.Is(err, backend.ErrNoSuchMailbox) {
		t.Errorf("OpenMailbox(missing) = %v, want ErrNoSuchMailbox", err)
	}
}

func testAppendAndRead(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	mb := openBox(t, u, "INBOX")
	date := time.Date(2024, 3, 1, 12, 30, 45, 0, time.UTC)
	cases := []struct {
		name, body string
		opts       backend.AppendOptions
	}{
		{"lf", msg("lf"), backend.AppendOptions{}},
		{"crlf", crlf(msg("crlf")), backend.AppendOptions{Flags: backend.FlagSeen}},
		{"mixed", "Subject: mixed\r\n\nline\nline2\r\n", backend.AppendOptions{Keywords: []string{"$Junk"}}},
		{"no final newline", "Subject: x\n\nno newline", backend.AppendOptions{InternalDate: date}},
		{"bare cr", "Subject: cr\r\n\r\na\rb\n", backend.AppendOptions{Flags: backend.FlagDraft | backend.FlagFlagged}},
		{"big", msg("big") + strings.Repeat("0123456789abcdef\n", 20000), backend.AppendOptions{}},
	}
	var last backend.UID
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := wantCRLF(c.body)
			res := appendMsg(t, mb, c.body, c.opts)
			if res.UID <= last {
				t.Errorf("UID %d not above previous %d", res.UID, last)
			}
			last = res.UID
			if res.Size != int64(len(want)) {
				t.Errorf("AppendResult.Size = %d, want %d", res.Size, len(want))
			}
			s := mustSync(t, mb)
			if s.UIDValidity != res.UIDValidity {
				t.Errorf("UIDVALIDITY %d, append said %d", s.UIDValidity, res.UIDValidity)
			}
			i := s.Find(res.UID)
			if i < 0 {
				t.Fatalf("appended UID %d not in snapshot", res.UID)
			}
			m := s.Messages()[i]
			if m.Size != int64(len(want)) && m.Size != -1 {
				t.Errorf("Message.Size = %d, want %d (or -1: not measured yet)", m.Size, len(want))
			}
			if n, err := mb.MessageSize(ctxT(t), res.UID); err != nil || n != int64(len(want)) {
				t.Errorf("MessageSize = %d, %v; want %d", n, err, len(want))
			}
			if m.Flags != c.opts.Flags {
				t.Errorf("Flags = %v, want %v", m.Flags.Names(), c.opts.Flags.Names())
			}
			if len(c.opts.Keywords) > 0 && !m.HasKeyword(c.opts.Keywords[0]) {
				t.Errorf("Keywords = %v, want %v", m.Keywords, c.opts.Keywords)
			}
			if !c.opts.InternalDate.IsZero() && !m.InternalDate.Equal(c.opts.InternalDate) {
				t.Errorf("InternalDate = %v, want %v", m.InternalDate, c.opts.InternalDate)
			}
			if c.opts.InternalDate.IsZero() && time.Since(m.InternalDate) > time.Hour {
				t.Errorf("InternalDate = %v, want about now", m.InternalDate)
			}
			if m.Key == "" {
				t.Error("Message.Key is empty")
			}
			if got := readMsg(t, mb, res.UID); got != want {
				t.Errorf("OpenMessage = %q, want %q", trunc(got), trunc(want))
			}
			if UIDNext := s.UIDNext; UIDNext <= res.UID {
				t.Errorf("UIDNext %d not above %d", UIDNext, res.UID)
			}
		})
	}
	if _, err := mb.OpenMessage(ctxT(t), last+100); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("OpenMessage(unknown) = %v, want ErrNoSuchMessage", err)
	}
	if _, err := mb.MessageSize(ctxT(t), last+100); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("MessageSize(unknown) = %v, want ErrNoSuchMessage", err)
	}
	// A reader that fails mid-way leaves nothing.
	before := len(mustSync(t, mb).Messages())
	_, err := mb.Append(ctxT(t), io.MultiReader(strings.NewReader("Subject: x\n\n"), errReader{}), backend.AppendOptions{})
	if err == nil {
		t.Error("Append with failing reader succeeded")
	}
	if n := len(mustSync(t, mb).Messages()); n != before {
		t.Errorf("failed Append left %d messages, want %d", n, before)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// wantCRLF converts bare LFs to CRLF, the form stores must return.
func wantCRLF(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func testUIDsNeverReused(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	mb := openBox(t, u, "INBOX")
	var uids []backend.UID
	for i := 0; i < 3; i++ {
		uids = append(uids, appendMsg(t, mb, msg(fmt.Sprint(i)), backend.AppendOptions{}).UID)
	}
	if _, err := mb.Expunge(ctxT(t), []backend.UID{uids[2]}); err != nil {
		t.Fatal(err)
	}
	next := appendMsg(t, mb, msg("after"), backend.AppendOptions{}).UID
	if next <= uids[2] {
		t.Errorf("UID %d after expunging %d: UIDs must not be reused", next, uids[2])
	}
	// A second handle and a fresh open agree.
	mb2 := openBox(t, u, "INBOX")
	s1, s2 := mustSync(t, mb), mustSync(t, mb2)
	if s1.UIDValidity != s2.UIDValidity || len(s1.Messages()) != len(s2.Messages()) || s1.UIDNext != s2.UIDNext {
		t.Errorf("two handles disagree: %+v vs %+v", s1, s2)
	}
	for i := range s1.Messages() {
		if s1.Messages()[i].UID != s2.Messages()[i].UID || s1.Messages()[i].Key != s2.Messages()[i].Key {
			t.Errorf("message %d differs between handles", i)
		}
	}
}

func testSetFlags(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	mb := openBox(t, u, "INBOX")
	a := appendMsg(t, mb, msg("a"), backend.AppendOptions{}).UID
	b := appendMsg(t, mb, msg("b"), backend.AppendOptions{Flags: backend.FlagSeen}).UID
	steps := []struct {
		name   string
		uids   []backend.UID
		op     backend.FlagOp
		flags  backend.Flags
		kw     []string
		wantF  map[backend.UID]backend.Flags
		wantKW map[backend.UID][]string
	}{
		{"add seen", []backend.UID{a}, backend.FlagsAdd, backend.FlagSeen, nil,
			map[backend.UID]backend.Flags{a: backend.FlagSeen, b: backend.FlagSeen}, nil},
		{"add flagged+kw to both", []backend.UID{a, b}, backend.FlagsAdd, backend.FlagFlagged, []string{"$Junk", "Work"},
			map[backend.UID]backend.Flags{a: backend.FlagSeen | backend.FlagFlagged, b: backend.FlagSeen | backend.FlagFlagged},
			map[backend.UID][]string{a: {"$Junk", "Work"}, b: {"$Junk", "Work"}}},
		{"remove seen and kw (case-insensitive)", []backend.UID{a}, backend.FlagsRemove, backend.FlagSeen, []string{"work"},
			map[backend.UID]backend.Flags{a: backend.FlagFlagged},
			map[backend.UID][]string{a: {"$Junk"}, b: {"$Junk", "Work"}}},
		{"replace", []backend.UID{b}, backend.FlagsReplace, backend.FlagDeleted | backend.FlagAnswered, []string{"$Label1"},
			map[backend.UID]backend.Flags{b: backend.FlagDeleted | backend.FlagAnswered},
			map[backend.UID][]string{b: {"$Label1"}}},
		{"missing uid skipped", []backend.UID{b + 100}, backend.FlagsAdd, backend.FlagSeen, nil, nil, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got, err := mb.SetFlags(ctxT(t), st.uids, st.op, st.flags, st.kw)
			if err != nil {
				t.Fatal(err)
			}
			present := 0
			for _, uid := range st.uids {
				if uid == a || uid == b {
					present++
				}
			}
			if len(got) != present {
				t.Errorf("SetFlags returned %d messages, want %d", len(got), present)
			}
			s := mustSync(t, mb)
			for uid, f := range st.wantF {
				i := s.Find(uid)
				if i < 0 {
					t.Fatalf("UID %d vanished", uid)
				}
				if s.Messages()[i].Flags != f {
					t.Errorf("UID %d flags %v, want %v", uid, s.Messages()[i].Flags.Names(), f.Names())
				}
				for _, r := range got {
					if r.UID == uid && r.Flags != f {
						t.Errorf("SetFlags result for %d: %v, want %v", uid, r.Flags.Names(), f.Names())
					}
				}
			}
			for uid, kws := range st.wantKW {
				m := s.Messages()[s.Find(uid)]
				if strings.Join(m.Keywords, " ") != strings.Join(kws, " ") {
					t.Errorf("UID %d keywords %v, want %v (sorted)", uid, m.Keywords, kws)
				}
			}
		})
	}
	// Contents are untouched by flag changes.
	if got := readMsg(t, mb, a); got != crlf(msg("a")) {
		t.Errorf("message changed by SetFlags: %q", got)
	}
}

func testExpunge(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	mb := openBox(t, u, "INBOX")
	var uids []backend.UID
	for i := 0; i < 4; i++ {
		uids = append(uids, appendMsg(t, mb, msg(fmt.Sprint(i)), backend.AppendOptions{}).UID)
	}
	got, err := mb.Expunge(ctxT(t), []backend.UID{uids[1], uids[3], uids[3] + 50})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint([]backend.UID{uids[1], uids[3]}) {
		t.Errorf("Expunge returned %v, want %v", got, []backend.UID{uids[1], uids[3]})
	}
	s := mustSync(t, mb)
	if len(s.Messages()) != 2 || s.Messages()[0].UID != uids[0] || s.Messages()[1].UID != uids[2] {
		t.Errorf("after expunge: %+v", s.Messages())
	}
	if _, err := mb.OpenMessage(ctxT(t), uids[1]); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("OpenMessage(expunged) = %v, want ErrNoSuchMessage", err)
	}
	if _, err := mb.MessageSize(ctxT(t), uids[1]); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("MessageSize(expunged) = %v, want ErrNoSuchMessage", err)
	}
	got, err = mb.Expunge(ctxT(t), []backend.UID{uids[1]})
	if err != nil || len(got) != 0 {
		t.Errorf("second Expunge = %v, %v; want nothing removed", got, err)
	}
}

func testCopyAndMove(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	ctx := ctxT(t)
	if err := u.CreateMailbox(ctx, "Dest", ""); err != nil {
		t.Fatal(err)
	}
	src := openBox(t, u, "INBOX")
	dst := openBox(t, u, "Dest")
	date := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	a := appendMsg(t, src, msg("a"), backend.AppendOptions{Flags: backend.FlagSeen | backend.FlagFlagged, Keywords: []string{"$Junk"}, InternalDate: date}).UID
	b := appendMsg(t, src, msg("b"), backend.AppendOptions{}).UID

	res, err := src.Copy(ctx, []backend.UID{a, b, b + 100}, "Dest")
	if err != nil {
		t.Fatal(err)
	}
	ds := mustSync(t, dst)
	if len(res.Source) != 2 || len(res.Dest) != 2 || res.Source[0] != a || res.Source[1] != b {
		t.Fatalf("CopyResult = %+v, want sources [%d %d]", res, a, b)
	}
	if res.UIDValidity != ds.UIDValidity {
		t.Errorf("CopyResult.UIDValidity %d, destination has %d", res.UIDValidity, ds.UIDValidity)
	}
	i := ds.Find(res.Dest[0])
	if i < 0 {
		t.Fatalf("copied UID %d not in destination", res.Dest[0])
	}
	m := ds.Messages()[i]
	if m.Flags != backend.FlagSeen|backend.FlagFlagged || !m.HasKeyword("$Junk") || !m.InternalDate.Equal(date) {
		t.Errorf("copy lost attributes: %+v", m)
	}
	if got := readMsg(t, dst, res.Dest[1]); got != crlf(msg("b")) {
		t.Errorf("copied content %q", got)
	}
	if n := len(mustSync(t, src).Messages()); n != 2 {
		t.Errorf("source has %d messages after Copy, want 2", n)
	}

	mres, err := src.Move(ctx, []backend.UID{a}, "Dest")
	if err != nil {
		t.Fatal(err)
	}
	if len(mres.Dest) != 1 || mres.Dest[0] <= res.Dest[1] {
		t.Errorf("MoveResult = %+v, want one new UID above %d", mres, res.Dest[1])
	}
	ss := mustSync(t, src)
	if len(ss.Messages()) != 1 || ss.Find(a) >= 0 {
		t.Errorf("source after Move: %+v", ss.Messages())
	}
	if got := readMsg(t, dst, mres.Dest[0]); got != crlf(msg("a")) {
		t.Errorf("moved content %q", got)
	}
	for _, uid := range append(res.Dest, mres.Dest...) {
		want := int64(len(crlf(msg("a"))))
		if n, err := dst.MessageSize(ctx, uid); err != nil || n != want {
			t.Errorf("MessageSize of copy %d = %d, %v; want %d", uid, n, err, want)
		}
	}
	if _, err := src.Copy(ctx, []backend.UID{b}, "Nowhere"); !errors.Is(err, backend.ErrNoSuchMailbox) {
		t.Errorf("Copy to missing = %v, want ErrNoSuchMailbox", err)
	}
	if _, err := src.Move(ctx, []backend.UID{b}, "Nowhere"); !errors.Is(err, backend.ErrNoSuchMailbox) {
		t.Errorf("Move to missing = %v, want ErrNoSuchMailbox", err)
	}
	if n := len(mustSync(t, src).Messages()); n != 1 {
		t.Errorf("failed Move removed the source message")
	}
	// Copy into the same mailbox makes a second message.
	self, err := src.Copy(ctx, []backend.UID{b}, "INBOX")
	if err != nil || len(self.Dest) != 1 || self.Dest[0] <= b {
		t.Errorf("Copy to self = %+v, %v", self, err)
	}
}

func testCreateDeleteRename(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(u.CreateMailbox(ctx, "Projects/2024/Q1", ""))
	must(u.CreateMailbox(ctx, "Entwürfe", ""))
	must(u.CreateMailbox(ctx, "Reports", backend.SpecialUseArchive))
	infos, err := u.ListMailboxes(ctx)
	must(err)
	for _, n := range []string{"Projects", "Projects/2024", "Projects/2024/Q1", "Entwürfe", "Reports"} {
		if _, ok := findInfo(infos, n); !ok {
			t.Errorf("ListMailboxes lacks %q: %v", n, names(infos))
		}
	}
	if p, _ := findInfo(infos, "Projects"); !p.HasChildren {
		t.Errorf("Projects should have children: %+v", p)
	}
	if p, _ := findInfo(infos, "Reports"); p.SpecialUse != backend.SpecialUseArchive {
		t.Errorf("Reports special use %q, want \\Archive", p.SpecialUse)
	}
	table := []struct {
		name string
		err  error
		fn   func() error
	}{
		{"create existing", backend.ErrMailboxExists, func() error { return u.CreateMailbox(ctx, "Projects", "") }},
		{"create INBOX", backend.ErrMailboxExists, func() error { return u.CreateMailbox(ctx, "inbox", "") }},
		{"delete with children", backend.ErrHasChildren, func() error { return u.DeleteMailbox(ctx, "Projects") }},
		{"delete missing", backend.ErrNoSuchMailbox, func() error { return u.DeleteMailbox(ctx, "Nope") }},
		{"delete INBOX", backend.ErrPermissionDenied, func() error { return u.DeleteMailbox(ctx, "INBOX") }},
		{"rename missing", backend.ErrNoSuchMailbox, func() error { return u.RenameMailbox(ctx, "Nope", "Nope2") }},
		{"rename onto existing", backend.ErrMailboxExists, func() error { return u.RenameMailbox(ctx, "Reports", "Entwürfe") }},
		{"rename to INBOX", backend.ErrMailboxExists, func() error { return u.RenameMailbox(ctx, "Reports", "INBOX") }},
	}
	for _, tc := range table {
		if err := tc.fn(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	// Messages survive a rename of their parent.
	q1 := openBox(t, u, "Projects/2024/Q1")
	appendMsg(t, q1, msg("q1"), backend.AppendOptions{})
	q1.Close()
	must(u.RenameMailbox(ctx, "Projects", "Work/Old"))
	infos, err = u.ListMailboxes(ctx)
	must(err)
	for _, n := range []string{"Work/Old", "Work/Old/2024", "Work/Old/2024/Q1"} {
		if _, ok := findInfo(infos, n); !ok {
			t.Errorf("after rename, list lacks %q: %v", n, names(infos))
		}
	}
	if _, ok := findInfo(infos, "Projects/2024"); ok {
		t.Errorf("after rename, old child still listed: %v", names(infos))
	}
	moved := openBox(t, u, "Work/Old/2024/Q1")
	if s := mustSync(t, moved); len(s.Messages()) != 1 {
		t.Errorf("renamed mailbox has %d messages, want 1", len(s.Messages()))
	}
	must(u.DeleteMailbox(ctx, "Work/Old/2024/Q1"))
	if _, err := u.OpenMailbox(ctx, "Work/Old/2024/Q1"); !errors.Is(err, backend.ErrNoSuchMailbox) {
		t.Errorf("deleted mailbox opens: %v", err)
	}
	must(u.DeleteMailbox(ctx, "Entwürfe"))
	infos, _ = u.ListMailboxes(ctx)
	if _, ok := findInfo(infos, "Entwürfe"); ok {
		t.Errorf("deleted mailbox still listed")
	}
}

func testInvalidNames(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	ctx := ctxT(t)
	for _, n := range []string{"", "/", "a//b", "/lead", "trail/", "..", "a/../b", "a/./b", "bad\x01ctl"} {
		if err := u.CreateMailbox(ctx, n, ""); !errors.Is(err, backend.ErrInvalidName) {
			t.Errorf("CreateMailbox(%q) = %v, want ErrInvalidName", n, err)
		}
		if _, err := u.OpenMailbox(ctx, n); !errors.Is(err, backend.ErrInvalidName) {
			t.Errorf("OpenMailbox(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func testRenameInbox(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	ctx := ctxT(t)
	in := openBox(t, u, "INBOX")
	a := appendMsg(t, in, msg("a"), backend.AppendOptions{Flags: backend.FlagSeen})
	appendMsg(t, in, msg("b"), backend.AppendOptions{})
	if err := u.RenameMailbox(ctx, "INBOX", "Old Mail"); err != nil {
		t.Fatal(err)
	}
	if s := mustSync(t, in); len(s.Messages()) != 0 {
		t.Errorf("INBOX has %d messages after rename, want 0", len(s.Messages()))
	}
	old := openBox(t, u, "Old Mail")
	s := mustSync(t, old)
	if len(s.Messages()) != 2 {
		t.Fatalf("renamed-to mailbox has %d messages, want 2", len(s.Messages()))
	}
	if s.Messages()[0].Flags != backend.FlagSeen {
		t.Errorf("flags lost in INBOX rename: %v", s.Messages()[0].Flags.Names())
	}
	if got := readMsg(t, old, s.Messages()[0].UID); got != crlf(msg("a")) {
		t.Errorf("content after INBOX rename: %q", got)
	}
	// INBOX keeps working and its UIDs keep ascending.
	if r := appendMsg(t, in, msg("c"), backend.AppendOptions{}); r.UIDValidity == a.UIDValidity && r.UID <= a.UID {
		t.Errorf("INBOX reused UID %d after rename", r.UID)
	}
}

func testSubscriptions(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	ctx := ctxT(t)
	if err := u.CreateMailbox(ctx, "Lists/Go", ""); err != nil {
		t.Fatal(err)
	}
	sub := func(name string) bool {
		infos, err := u.ListMailboxes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i, _ := findInfo(infos, name)
		return i.Subscribed
	}
	if sub("Lists/Go") {
		t.Error("new mailbox is subscribed")
	}
	for _, step := range []struct {
		name string
		on   bool
	}{{"Lists/Go", true}, {"INBOX", true}, {"Lists/Go", false}, {"Lists/Go", true}} {
		if err := u.SetSubscribed(ctx, step.name, step.on); err != nil {
			t.Fatal(err)
		}
		if got := sub(step.name); got != step.on {
			t.Errorf("after SetSubscribed(%s, %v): Subscribed=%v", step.name, step.on, got)
		}
	}
	if err := u.RenameMailbox(ctx, "Lists", "Groups"); err != nil {
		t.Fatal(err)
	}
	if !sub("Groups/Go") {
		t.Error("subscription did not follow the rename")
	}
	if err := u.SetSubscribed(ctx, "a//b", true); !errors.Is(err, backend.ErrInvalidName) {
		t.Errorf("SetSubscribed(invalid) = %v, want ErrInvalidName", err)
	}
}

func testQuota(t *testing.T, newStore Factory) {
	body := msg("q") + strings.Repeat("x", 400) + "\n"
	_, u, _ := openUser(t, newStore, func(a *backend.Account) { a.QuotaBytes = 1000; a.QuotaMessages = 10 })
	ctx := ctxT(t)
	mb := openBox(t, u, "INBOX")
	q, err := u.Quota(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q.LimitBytes != 1000 || q.LimitMessages != 10 || q.UsedBytes != 0 || q.UsedMessages != 0 {
		t.Errorf("empty quota = %+v", q)
	}
	appendMsg(t, mb, body, backend.AppendOptions{})
	appendMsg(t, mb, body, backend.AppendOptions{})
	q, _ = u.Quota(ctx)
	if q.UsedMessages != 2 || q.UsedBytes < int64(2*len(body)) {
		t.Errorf("quota after two appends = %+v", q)
	}
	_, err = mb.Append(ctx, strings.NewReader(body), backend.AppendOptions{})
	if !errors.Is(err, backend.ErrOverQuota) {
		t.Fatalf("third Append = %v, want ErrOverQuota", err)
	}
	if n := len(mustSync(t, mb).Messages()); n != 2 {
		t.Errorf("refused Append left %d messages, want 2", n)
	}
	if q2, _ := u.Quota(ctx); q2.UsedMessages != 2 {
		t.Errorf("refused Append changed usage: %+v", q2)
	}
	appendMsg(t, mb, body, backend.AppendOptions{IgnoreQuota: true})
	s := mustSync(t, mb)
	if _, err := mb.Expunge(ctx, []backend.UID{s.Messages()[0].UID, s.Messages()[1].UID}); err != nil {
		t.Fatal(err)
	}
	q, _ = u.Quota(ctx)
	if q.UsedMessages != 1 {
		t.Errorf("quota after expunge = %+v, want 1 message", q)
	}
	appendMsg(t, mb, body, backend.AppendOptions{})
}

func testLock(t *testing.T, newStore Factory) {
	s, u, acct := openUser(t, newStore, nil)
	ctx := ctxT(t)
	release, err := u.Lock(ctx, "pop3")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := s.Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	if _, err := u2.Lock(ctx, "pop3"); !errors.Is(err, backend.ErrLocked) {
		t.Errorf("second Lock = %v, want ErrLocked", err)
	}
	other, err := u2.Lock(ctx, "other")
	if err != nil {
		t.Errorf("a lock of another name: %v", err)
	} else if err := other(); err != nil {
		t.Error(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	r2, err := u2.Lock(ctx, "pop3")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	if err := r2(); err != nil {
		t.Error(err)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Errorf("Changed not closed after %s", what)
	}
}

func testChanged(t *testing.T, newStore Factory) {
	s, u, acct := openUser(t, newStore, nil)
	ctx := ctxT(t)
	mb := openBox(t, u, "INBOX")
	other := openBox(t, u, "INBOX")
	snap := mustSync(t, mb)
	select {
	case <-snap.Changed:
		// Allowed (spurious), but a fresh snapshot must then settle.
		snap = mustSync(t, mb)
	default:
	}
	r := appendMsg(t, other, msg("x"), backend.AppendOptions{})
	waitClosed(t, snap.Changed, "Append through another handle")
	snap = mustSync(t, mb)
	if snap.Find(r.UID) < 0 {
		t.Fatalf("new message not in snapshot after Changed")
	}
	if _, err := other.SetFlags(ctx, []backend.UID{r.UID}, backend.FlagsAdd, backend.FlagSeen, nil); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, snap.Changed, "SetFlags through another handle")
	snap = mustSync(t, mb)
	if snap.Messages()[snap.Find(r.UID)].Flags != backend.FlagSeen {
		t.Errorf("flag change not visible")
	}
	// Another session of the same user (a second Open).
	u2, err := s.Open(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	mb2 := openBox(t, u2, "INBOX")
	if _, err := mb2.Expunge(ctx, []backend.UID{r.UID}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, snap.Changed, "Expunge through another session")
	if s := mustSync(t, mb); s.Find(r.UID) >= 0 {
		t.Errorf("expunged message still in snapshot")
	}
}

func testStatus(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	mb := openBox(t, u, "INBOX")
	appendMsg(t, mb, msg("a"), backend.AppendOptions{Flags: backend.FlagSeen})
	appendMsg(t, mb, msg("b"), backend.AppendOptions{Flags: backend.FlagDeleted})
	appendMsg(t, mb, msg("c"), backend.AppendOptions{})
	st, err := mb.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	s := mustSync(t, mb)
	want := backend.Status{Messages: 3, Unseen: 2, Deleted: 1, UIDNext: s.UIDNext, UIDValidity: s.UIDValidity,
		Size: int64(len(crlf(msg("a"))) + len(crlf(msg("b"))) + len(crlf(msg("c"))))}
	if st != want {
		t.Errorf("Status = %+v, want %+v", st, want)
	}
	want.Size = 0
	if c := s.Counts(); c != want {
		t.Errorf("Snapshot.Counts = %+v, want %+v", c, want)
	}
}

func testConcurrentAppend(t *testing.T, newStore Factory) {
	_, u, _ := openUser(t, newStore, nil)
	const workers, each = 6, 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[backend.UID]string{}
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			mb, err := u.OpenMailbox(context.Background(), "INBOX")
			if err != nil {
				errs <- err
				return
			}
			defer mb.Close()
			for i := 0; i < each; i++ {
				body := msg(fmt.Sprintf("w%d-%d", w, i))
				r, err := mb.Append(context.Background(), strings.NewReader(body), backend.AppendOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, dup := seen[r.UID]; dup {
					errs <- fmt.Errorf("UID %d given twice (%s and %s)", r.UID, prev, body)
				}
				seen[r.UID] = body
				mu.Unlock()
				if _, err := mb.Sync(context.Background()); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mb := openBox(t, u, "INBOX")
	s := mustSync(t, mb)
	if len(s.Messages()) != workers*each {
		t.Fatalf("%d messages after %d appends", len(s.Messages()), workers*each)
	}
	for _, m := range s.Messages() {
		body, ok := seen[m.UID]
		if !ok {
			t.Errorf("UID %d not returned by any Append", m.UID)
			continue
		}
		if got := readMsg(t, mb, m.UID); !bytes.Equal([]byte(got), []byte(crlf(body))) {
			t.Errorf("UID %d holds %q, want %q", m.UID, got, crlf(body))
		}
	}
}
