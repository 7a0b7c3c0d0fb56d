package maildir

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// backdate makes the mailbox look quiet (changed two seconds ago).
func backdate(t *testing.T, dir string) {
	t.Helper()
	past := time.Now().Add(-2 * time.Second)
	for _, p := range []string{"new", "cur", uidlistName} {
		if err := os.Chtimes(filepath.Join(dir, p), past, past); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCacheOpensWithoutListing(t *testing.T) {
	root := newMaildir(t)
	for i, info := range []string{":2,S", ":2,FRa", ""} {
		sub := "cur"
		if info == "" {
			sub = "new"
		}
		writeFile(t, filepath.Join(root, sub, "170000000"+itoa(i)+".M1P1.host,S=10,W=12"+info), "Subject: \n\n", time.Unix(1700000000, 0))
	}
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\n", time.Time{})
	// First process: lists, writes the uidlist; once quiet, the cache.
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s1, mb := syncBox(t, u, "INBOX")
	backdate(t, root)
	st := mb.(*mailbox).st
	st.mu.Lock()
	st.newID, st.curID, st.ulID = statID(filepath.Join(root, "new")), statID(filepath.Join(root, "cur")), statID(filepath.Join(root, uidlistName))
	st.writeCache()
	st.mu.Unlock()
	if _, err := os.Stat(filepath.Join(root, cacheName)); err != nil {
		t.Fatalf("no cache written: %v", err)
	}
	// Second process: the cache is used, and gives the same snapshot.
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	st2 := s.acquire(root, owner{-1, -1})
	defer s.releaseState(st2)
	st2.mu.Lock()
	ok := st2.loadFromCache()
	st2.mu.Unlock()
	if !ok {
		t.Fatal("valid cache not used")
	}
	if len(st2.snap.Messages) != len(s1.Messages) {
		t.Fatalf("cache gave %d messages, scan %d", len(st2.snap.Messages), len(s1.Messages))
	}
	for i, m := range st2.snap.Messages {
		w := s1.Messages[i]
		if m.UID != w.UID || m.Key != w.Key || m.Flags != w.Flags || strings.Join(m.Keywords, ",") != strings.Join(w.Keywords, ",") ||
			m.Size != w.Size || !m.InternalDate.Equal(w.InternalDate) || st2.locs[i].info != st.locs[i].info || st2.locs[i].inNew != st.locs[i].inNew {
			t.Errorf("message %d from cache %+v, from scan %+v", i, m, w)
		}
	}
	// Any change to cur/ invalidates it: a flag change by another program.
	old := filepath.Join(root, "cur", s1.Messages[0].Key+":2,S")
	if err := os.Rename(old, strings.TrimSuffix(old, "S")+"RS"); err != nil {
		t.Fatal(err)
	}
	backdate(t, root)
	_, u3 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s3, _ := syncBox(t, u3, "INBOX")
	if s3.Messages[0].Flags != backend.FlagSeen|backend.FlagAnswered {
		t.Errorf("stale cache used: flags %v", s3.Messages[0].Flags.Names())
	}
	// A damaged cache is ignored.
	writeFile(t, filepath.Join(root, cacheName), "roost-cache 1\ngarbage\n", time.Time{})
	_, u4 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	if s4, _ := syncBox(t, u4, "INBOX"); len(s4.Messages) != 3 {
		t.Errorf("%d messages with a damaged cache", len(s4.Messages))
	}
}

// TestOwnChangeDoesNotHideOthers: a snapshot published from memory after
// an own change never hides a change someone else made at the same time:
// its Changed channel closes and the next Sync shows it.
func TestOwnChangeDoesNotHideOthers(t *testing.T) {
	root := newMaildir(t)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()
	snap, mb := syncBox(t, u, "INBOX")
	r, err := mb.Append(ctx, strings.NewReader("Subject: own\n\n"), backend.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(root, "new", "1700000000.V1I"+itoa(i)+"M1.other"), "Subject: other\n\n", time.Time{})
		op := backend.FlagsAdd
		if i%2 == 1 {
			op = backend.FlagsRemove
		}
		if _, err := mb.SetFlags(ctx, []backend.UID{r.UID}, op, backend.FlagSeen, nil); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for {
			if snap, err = mb.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if len(snap.Messages) == i+2 {
				break
			}
			select {
			case <-snap.Changed:
			case <-deadline:
				t.Fatalf("round %d: outside delivery not visible: %d messages", i, len(snap.Messages))
			}
		}
	}
}
