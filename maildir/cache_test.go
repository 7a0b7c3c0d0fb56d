package maildir

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// backdate makes the mailbox look quiet (changed two seconds ago).
func backdate(t *testing.T, dir string) {
	t.Helper()
	past := time.Now().Add(-2 * time.Second)
	for _, p := range []string{"new", "cur", uidlistName, keywordsName} {
		if err := os.Chtimes(filepath.Join(dir, p), past, past); err != nil && (p != keywordsName || !os.IsNotExist(err)) {
			t.Fatal(err)
		}
	}
}

// settle backdates st's files and records their identities in st, as a
// second of quiet followed by a Sync would, then writes the cache.
func settle(t *testing.T, st *mboxState) {
	t.Helper()
	// inotify events of the set-up's last changes may still be on their
	// way: let them come, and a Sync take them in (the uidlist is unchanged,
	// so the state keeps its history).
	time.Sleep(100 * time.Millisecond)
	if _, err := st.sync(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	backdate(t, st.dir)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.newID, st.curID = statID(filepath.Join(st.dir, "new")), statID(filepath.Join(st.dir, "cur"))
	st.ulID, st.kwID = statID(filepath.Join(st.dir, uidlistName)), statID(filepath.Join(st.dir, keywordsName))
	st.writeCache()
	if _, err := os.Stat(filepath.Join(st.dir, cacheName)); err != nil {
		t.Fatalf("no cache written: %v", err)
	}
}

// quietStore is a Store without background measurer, so that sizes stay
// as the open found them.
func quietStore(t *testing.T) *Store {
	s := newTestStore(t, Options{SpecialUse: map[string]string{}, PollInterval: time.Hour})
	s.bg.stop()
	return s
}

// stateView is everything an open sets in an mboxState, bar lazily built
// indexes (byKey, kwCache) and channels.
type stateView struct {
	UIDValidity, NextUID     uint32
	HdrExtra                 []string
	Msgs                     []backend.Message
	Locs                     []loc
	Ext                      map[backend.UID]string
	KW                       keywordTable
	KwID, UlID, NewID, CurID fileID
	UlEnd                    int64
	UlTail                   []byte
	FileRecs                 int
	FileClean, MustWrite     bool
	Loaded, CurSettled       bool
	SnapValidity             uint32
	SnapNext                 backend.UID
	SnapMsgs                 []backend.Message
}

func viewOf(st *mboxState) stateView {
	return stateView{st.uidValidity, st.nextUID, st.hdrExtra, st.msgs, st.locs, st.ext, st.kw,
		st.kwID, st.ulID, st.newID, st.curID, st.ulEnd, st.ulTail, st.fileRecs, st.fileClean, st.mustWrite,
		st.loaded, st.curSettled, st.snap.UIDValidity, st.snap.UIDNext, st.snap.Messages()}
}

func compareStates(t *testing.T, got, want stateView, what string) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < g.NumField(); i++ {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("%s: %s = %+v, want %+v", what, g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
}

// openCached opens root's INBOX state from roost-cache in a new Store.
func openCached(t *testing.T, root string) *mboxState {
	t.Helper()
	st, ok := tryCache(t, root)
	if !ok {
		t.Fatal("valid cache not used")
	}
	return st
}

// openFull opens root's INBOX state the long way in a new Store.
func openFull(t *testing.T, root string) *mboxState {
	t.Helper()
	st := newState(t, root)
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, err := st.syncLocked(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return st
}

// tryCache loads root's INBOX state from roost-cache alone in a new Store,
// and says whether the cache was used.
func tryCache(t *testing.T, root string) (*mboxState, bool) {
	st := newState(t, root)
	st.mu.Lock()
	defer st.mu.Unlock()
	snap, finish := st.loadFromCache()
	if finish != nil {
		finish()
	}
	return st, snap != nil
}

// newState is root's INBOX state, not loaded yet, in a new quiet Store.
func newState(t *testing.T, root string) *mboxState {
	s := quietStore(t)
	st := s.acquire(root, owner{-1, -1})
	t.Cleanup(func() { s.releaseState(st) })
	return st
}

// TestCacheSameAsFullOpen: an open from roost-cache leaves the state as
// loadState and a listing leave it — for a cache written by a process
// with a history (its own delivery, another's append read as a tail, an
// expunge that left its record in the uidlist), with keywords, unknown
// sizes and Dovecot's extra uidlist fields.
func TestCacheSameAsFullOpen(t *testing.T) {
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, "cur", "1700000000.M1P1.host,S=10,W=12:2,S"), "Subject: \n\n", time.Unix(1700000000, 0))
	writeFile(t, filepath.Join(root, "cur", "1700000001.M2P1.host:2,FRa"), "Subject: 2\n\n", time.Unix(1700000001, 0))
	writeFile(t, filepath.Join(root, "cur", "1700000002.M3P1.host,W=20:2,Tb"), "Subject: 3\n\n", time.Unix(1700000002, 0))
	writeFile(t, filepath.Join(root, "new", "1700000003.M4P1.host"), "Subject: 4\n\n", time.Unix(1700000003, 0))
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\n1 work\n", time.Time{})
	writeFile(t, filepath.Join(root, uidlistName), "3 V1700000000 N8 G0123456789abcdef0123456789abcdef\n"+
		"3 T1700000000 :1700000000.M1P1.host,S=10,W=12\n"+
		"5 S99 O2 Pabc123 T1700000001 :1700000001.M2P1.host\n"+
		"6 T1700000002 :1700000002.M3P1.host,W=20\n"+
		"7 T1700000004 :1700000004.M5P1.gone\n", time.Time{})
	s := quietStore(t)
	u, err := s.Open(context.Background(), backend.Account{Name: "a", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, mb := syncBox(t, u, "INBOX") // numbers new/'s file, rewrites the list
	// Another process appends to the uidlist; another expunges.
	other := quietStore(t)
	ou, err := other.Open(context.Background(), backend.Account{Name: "a", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, omb := syncBox(t, ou, "INBOX")
	if _, err := omb.Append(context.Background(), strings.NewReader("Subject: 5\n\nfive\n"), backend.AppendOptions{Flags: backend.FlagSeen}); err != nil {
		t.Fatal(err)
	}
	sh(t, root, `rm cur/1700000002.M3P1.host,W=20:2,Tb`)
	snap, err := mb.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st := mb.(*mailbox).st
	if len(snap.Messages()) != 4 || st.fileRecs != 5 {
		t.Fatalf("set-up: %d messages, %d records; want 4 and 5", len(snap.Messages()), st.fileRecs)
	}
	settle(t, st)

	cached, full := openCached(t, root), openFull(t, root)
	if cached.listings != 0 {
		t.Errorf("cache open listed the directories %d times", cached.listings)
	}
	compareStates(t, viewOf(cached), viewOf(full), "cache open vs full open")
	// Unknown sizes (-1) are kept as they are; the appended one has W.
	for i, want := range []int64{12, -1, -1, 20} {
		if m := cached.snap.Messages()[i]; m.Size != want {
			t.Errorf("UID %d: size %d, want %d", m.UID, m.Size, want)
		}
	}
	if m := cached.snap.Messages()[1]; m.UIDL != "abc123" || m.POP3Order != 2 || cached.ext[m.UID] != "S99 O2" ||
		strings.Join(m.Keywords, ",") != "$Junk" || m.Flags != backend.FlagFlagged|backend.FlagAnswered {
		t.Errorf("message with Dovecot fields from cache: %+v ext %q", m, cached.ext[m.UID])
	}
	// Both write the same records when the list must be rewritten.
	recs := func(st *mboxState) (out []ulRec) {
		for _, m := range st.msgs {
			out = append(out, st.record(m))
		}
		return out
	}
	if !reflect.DeepEqual(recs(cached), recs(full)) {
		t.Errorf("records differ:\n%+v\n%+v", recs(cached), recs(full))
	}
}

// TestCacheOpenThenOthersChange: after an open from the cache (through
// OpenMailbox), changes by other processes are picked up as after a full
// open: a delivery, a flag change, an expunge, records another process
// appended to the uidlist (read as a tail), and a burst of deliveries,
// flag changes and expunges by a child process.
func TestCacheOpenThenOthersChange(t *testing.T) {
	requireInotify(t)
	root := newMaildir(t)
	{
		_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
		_, mb := syncBox(t, u, "INBOX")
		for i := 0; i < 5; i++ {
			if _, err := mb.Append(context.Background(), strings.NewReader("Subject: "+itoa(i)+"\n\nx\n"), backend.AppendOptions{Flags: backend.FlagSeen}); err != nil {
				t.Fatal(err)
			}
		}
	}
	backdate(t, root)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	syncBox(t, u, "INBOX") // lists once more, now quiet: writes the cache

	_, u = openRoot(t, root, Options{SpecialUse: map[string]string{}, PollInterval: time.Hour})
	snap, mb := syncBox(t, u, "INBOX")
	st := mb.(*mailbox).st
	if st.listings != 0 || len(snap.Messages()) != 5 {
		t.Fatalf("open: %d listings, %d messages; want the cache's 5 without listing", st.listings, len(snap.Messages()))
	}
	ctx := context.Background()
	same := func(what string) {
		t.Helper()
		var err error
		for i := 0; ; i++ {
			if snap, err = mb.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			full := openFull(t, root)
			got, want := snap.Messages(), full.snap.Messages()
			if reflect.DeepEqual(uidFlags(got), uidFlags(want)) && snap.UIDNext == full.snap.UIDNext {
				return
			}
			if i == 50 {
				t.Fatalf("after %s:\n got %v\nwant %v", what, uidFlags(got), uidFlags(want))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Another process appends records to the uidlist: read as a tail of
	// the list the cache described.
	other := quietStore(t)
	ou, err := other.Open(ctx, backend.Account{Name: "a", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, omb := syncBox(t, ou, "INBOX")
	if _, err := omb.Append(ctx, strings.NewReader("Subject: o\n\no\n"), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	ul := filepath.Join(root, uidlistName)
	st.mu.Lock()
	next := st.nextUID
	ok := st.readTail(ul, statID(ul))
	st.mu.Unlock()
	if !ok || st.nextUID != next+1 {
		t.Errorf("records appended after a cache open: readTail %v, next UID %d after %d", ok, st.nextUID, next)
	}
	same("another process's append")

	cur := func(i int) string {
		names, _ := filepath.Glob(filepath.Join(root, "cur", snap.Messages()[i].Key+"*"))
		if len(names) != 1 {
			t.Fatalf("message %d: files %v", i, names)
		}
		return filepath.Join("cur", filepath.Base(names[0]))
	}
	sh(t, root, `printf 'Subject: d\n\nhi\n' > tmp/d && mv tmp/d new/1700000001.M2P2.other`)
	waitChanged(t, snap, "delivery")
	same("a delivery")
	sh(t, root, `mv `+cur(0)+` cur/`+snap.Messages()[0].Key+`:2,FS`)
	waitChanged(t, snap, "flag change")
	same("a flag change")
	sh(t, root, `rm `+cur(1))
	waitChanged(t, snap, "expunge")
	same("an expunge")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mpRoleEnv+"=deliver:c", mpRootEnv+"="+root, mpOutEnv+"="+filepath.Join(t.TempDir(), "out"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	same("a child process's deliveries, flag changes and expunges")
}

func uidFlags(msgs []backend.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, itoa(int(m.UID))+"/"+m.Key+"/"+strings.Join(m.Flags.Names(), "")+"/"+strings.Join(m.Keywords, ","))
	}
	return out
}

// TestCacheDamageIgnored: a torn, truncated, corrupt or format 1 cache is
// never trusted: the open lists the directories, gives the right
// snapshot and writes a good cache in its place.
func TestCacheDamageIgnored(t *testing.T) {
	root := newMaildir(t)
	for i, info := range []string{":2,S", ":2,FRa", ""} {
		sub := "cur"
		if info == "" {
			sub = "new"
		}
		writeFile(t, filepath.Join(root, sub, "170000000"+itoa(i)+".M1P1.host,S=10,W=12"+info), "Subject: \n\n", time.Unix(1700000000, 0))
	}
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	want, mb := syncBox(t, u, "INBOX")
	settle(t, mb.(*mailbox).st)
	good, err := os.ReadFile(filepath.Join(root, cacheName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseCache(bytes.Clone(good)); err != nil {
		t.Fatalf("good cache rejected: %v", err)
	}
	bad := map[string][]byte{
		"empty":     {},
		"magic":     good[:len(cacheMagic)],
		"half":      good[:len(good)/2],
		"no crc":    good[:len(good)-4],
		"short":     good[:len(good)-1],
		"longer":    append(bytes.Clone(good), 0),
		"format 1":  []byte("roost-cache 1\n1 2 3 4 5 6 7\n1 c:2,S\n"),
		"zero tail": append(good[:len(good)-64:len(good)-64], make([]byte, 64)...),
	}
	for _, off := range []int{0, len(cacheMagic) + 1, len(good) / 3, len(good) - 20, len(good) - 2} {
		b := bytes.Clone(good)
		b[off] ^= 0x10
		bad["flip at "+itoa(off)] = b
	}
	for what, b := range bad {
		if _, err := parseCache(bytes.Clone(b)); err == nil {
			t.Errorf("%s: damaged cache accepted", what)
		}
	}
	for _, what := range []string{"half", "format 1", "flip at " + itoa(len(good)/3)} {
		if err := os.WriteFile(filepath.Join(root, cacheName), bad[what], 0o600); err != nil {
			t.Fatal(err)
		}
		_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
		got, mb := syncBox(t, u, "INBOX")
		if n := mb.(*mailbox).st.listings; n != 1 {
			t.Errorf("%s: %d listings, want a full open", what, n)
		}
		if !reflect.DeepEqual(uidFlags(got.Messages()), uidFlags(want.Messages())) {
			t.Errorf("%s: %v, want %v", what, uidFlags(got.Messages()), uidFlags(want.Messages()))
		}
		if b, err := os.ReadFile(filepath.Join(root, cacheName)); err != nil || !bytes.Equal(b, good) {
			t.Errorf("%s: cache not replaced by a good one (%v)", what, err)
		}
	}
	// Any change of identity makes it stale: a flag change by another
	// program, seen although the cache is intact.
	old := filepath.Join(root, "cur", want.Messages()[0].Key+":2,S")
	if err := os.Rename(old, strings.TrimSuffix(old, "S")+"RS"); err != nil {
		t.Fatal(err)
	}
	backdate(t, root)
	_, u3 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s3, _ := syncBox(t, u3, "INBOX")
	if s3.Messages()[0].Flags != backend.FlagSeen|backend.FlagAnswered {
		t.Errorf("stale cache used: flags %v", s3.Messages()[0].Flags.Names())
	}
}

// TestCacheNotWrittenUnquiet: files changed within the last second may
// change again unseen within one timestamp tick: no cache then.
func TestCacheNotWrittenUnquiet(t *testing.T) {
	root := newMaildir(t)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	_, mb := syncBox(t, u, "INBOX")
	if _, err := mb.Append(context.Background(), strings.NewReader("Subject: x\n\n"), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, cacheName)); err == nil {
		t.Fatal("cache written for files changed just now")
	}
}

// TestCacheUidlistChanged: when only the uidlist changed since the cache
// was written (another process recorded sizes, or appended records), the
// list is read and the listing taken from the cache: no listing, the
// state of a full open. A list that no longer gives every cached file its
// UID sends the open the long way.
func TestCacheUidlistChanged(t *testing.T) {
	root := newMaildir(t)
	for i, info := range []string{":2,S", ":2,FRa", "", ":2,"} {
		sub := "cur"
		if info == "" {
			sub = "new"
		}
		writeFile(t, filepath.Join(root, sub, "170000000"+itoa(i)+".M1P1.host"+info), "Subject: "+itoa(i)+"\n\nbody\n", time.Unix(1700000000+int64(i), 0))
	}
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\n", time.Time{})
	s := quietStore(t)
	u, err := s.Open(context.Background(), backend.Account{Name: "a", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, mb := syncBox(t, u, "INBOX")
	settle(t, mb.(*mailbox).st)
	ulPath := filepath.Join(root, uidlistName)
	orig, err := os.ReadFile(ulPath)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(data string) {
		t.Helper()
		tmp := ulPath + ".new"
		if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, ulPath); err != nil {
			t.Fatal(err)
		}
	}
	loads := func() (*mboxState, bool) { return tryCache(t, root) }
	lines := strings.SplitAfter(string(orig), "\n")
	hdr, recs := lines[0], lines[1:len(lines)-1]
	if len(recs) != 4 {
		t.Fatalf("set-up: uidlist %q", orig)
	}

	// Sizes recorded (as the background measurer does) and a record for
	// a file not placed yet: read from the list, listing from the cache.
	var b strings.Builder
	b.WriteString(hdr)
	for i, r := range recs {
		uid, rest, _ := strings.Cut(r, " ")
		b.WriteString(uid + " W" + itoa(20+i) + " " + rest)
	}
	b.WriteString("9 T1700000009 :1700000009.M9P9.later\n")
	rewrite(b.String())
	st, ok := loads()
	if !ok || st.listings != 0 {
		t.Fatalf("uidlist rewritten: cache used %v, %d listings", ok, st.listings)
	}
	compareStates(t, viewOf(st), viewOf(openFull(t, root)), "cache + new uidlist vs full open")
	if st.snap.Messages()[1].Size != 21 || strings.Join(st.snap.Messages()[1].Keywords, ",") != "$Junk" {
		t.Errorf("message 2: %+v", st.snap.Messages()[1])
	}

	// A cached file lost its record (the list was renumbered): full open.
	for what, data := range map[string]string{
		"renumbered":  hdr + strings.Join([]string{"11" + recs[0], "12" + recs[1], "13" + recs[2], "14" + recs[3]}, ""),
		"record gone": hdr + strings.Join(recs[:3], ""),
		"other name":  hdr + strings.Join(recs[:3], "") + strings.Replace(recs[3], ".M1P1.", ".M1P2.", 1),
	} {
		rewrite(data)
		if _, ok := loads(); ok {
			t.Errorf("%s: cache trusted", what)
		}
	}
}

// TestCacheAfterFirstOpen: the first open of a Maildir whose directories
// are quiet (an old mailbox, a migration) writes the uidlist and at once
// a cache, marked unsettled: the next process reads the uidlist but not
// the directories. A second later it is written settled, with no Sync.
func TestCacheAfterFirstOpen(t *testing.T) {
	root := newMaildir(t)
	for i, info := range []string{":2,S", ""} {
		sub := "cur"
		if info == "" {
			sub = "new"
		}
		writeFile(t, filepath.Join(root, sub, "170000000"+itoa(i)+".M1P1.host,W=12"+info), "Subject: \n\n", time.Unix(1700000000, 0))
	}
	past := time.Now().Add(-2 * time.Second)
	for _, d := range []string{"new", "cur"} {
		if err := os.Chtimes(filepath.Join(root, d), past, past); err != nil {
			t.Fatal(err)
		}
	}
	// Sizes in the names: no background measurer rewrites the uidlist.
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	syncBox(t, u, "INBOX")
	settled := func() bool {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, cacheName))
		if err != nil {
			t.Fatalf("no cache after the first open: %v", err)
		}
		cs, err := parseCache(b)
		if err != nil {
			t.Fatal(err)
		}
		return cs.ulSettled
	}
	if settled() {
		t.Error("a uidlist written just now is marked settled")
	}
	st, ok := tryCache(t, root)
	if !ok || st.listings != 0 {
		t.Fatalf("second process: cache used %v, %d listings", ok, st.listings)
	}
	compareStates(t, viewOf(st), viewOf(openFull(t, root)), "open after a first open vs full open")
	// A second later it is settled without any Sync.
	deadline := time.Now().Add(10 * time.Second)
	for !settled() {
		if time.Now().After(deadline) {
			t.Fatal("cache not marked settled after a quiet second")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCacheDovecotFixture: each folder of a Maildir Dovecot wrote (its
// uidlist fields, keywords, a folder name in modified UTF-7) opens from
// the cache as it opens the long way: first from the cache a first open
// leaves (uidlist read again), then from the settled one.
func TestCacheDovecotFixture(t *testing.T) {
	md := extractFixture(t, "testdata/dovecot-fixture.tar", t.TempDir())
	for _, dir := range []string{md, filepath.Join(md, ".Entw&APw-rfe"), filepath.Join(md, ".Projects.2024")} {
		first := openFull(t, dir) // adds T to Dovecot's records, then writes the cache
		if _, err := os.Stat(filepath.Join(dir, cacheName)); err != nil {
			t.Fatalf("%s: no cache after the first open: %v", dir, err)
		}
		compareStates(t, viewOf(openCached(t, dir)), viewOf(openFull(t, dir)), dir+": unsettled cache vs full open")
		settle(t, first)
		compareStates(t, viewOf(openCached(t, dir)), viewOf(openFull(t, dir)), dir+": settled cache vs full open")
	}
}
