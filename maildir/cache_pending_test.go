package maildir

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// cachedBox is a Maildir of n messages, some seen, deleted or with a
// keyword, whose settled roost-cache a new Store opens with.
func cachedBox(t *testing.T, n int) (root string, want *backend.Snapshot) {
	t.Helper()
	root = newMaildir(t)
	infos := []string{":2,S", ":2,", ":2,FSa", ":2,ST", ":2,b"}
	for i := 0; i < n; i++ {
		writeFile(t, filepath.Join(root, "cur", "17000"+itoa(10000+i)+".M1P1.host,S=10,W=12"+infos[i%len(infos)]),
			"Subject: \n\n", time.Unix(int64(1700000000+i), 0))
	}
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\n1 Work\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	want, mb := syncBox(t, u, "INBOX")
	settle(t, mb.(*mailbox).st)
	if _, err := os.ReadFile(filepath.Join(root, cacheName)); err != nil {
		t.Fatal(err)
	}
	return root, want
}

// sameSummary compares summaries, keywords as sets.
func sameSummary(a, b backend.Summary) bool {
	a.Keywords, b.Keywords = slices.Sorted(slices.Values(a.Keywords)), slices.Sorted(slices.Values(b.Keywords))
	return reflect.DeepEqual(a, b)
}

// TestCacheOpenAnswersBeforeDecoding: a new process's Sync of a cached
// mailbox answers from the file's header; the summary and the list, once
// decoded, are those of a full open, for many sessions at once, also when
// they close the mailbox at once or the Store closes meanwhile.
func TestCacheOpenAnswersBeforeDecoding(t *testing.T) {
	root, want := cachedBox(t, 500)
	wantSum := backend.Summarize(want.Messages())
	if wantSum.Unseen == 0 || wantSum.Deleted == 0 || len(wantSum.Keywords) != 2 || wantSum.FirstUnseen != 1 {
		t.Fatalf("test data: summary %+v", wantSum)
	}
	for round := 0; round < 3; round++ {
		s, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mb, err := u.OpenMailbox(context.Background(), "INBOX")
				if err != nil {
					t.Error(err)
					return
				}
				snap, err := mb.Sync(context.Background())
				if g%2 == 1 {
					mb.Close() // before the list is decoded, likely
				}
				if round == 2 && g == 3 {
					s.Close()
				}
				if err != nil {
					t.Error(err)
					return
				}
				if !sameSummary(snap.Summary(), wantSum) || snap.Len() != want.Len() || snap.UIDNext != want.UIDNext {
					t.Errorf("summary %+v, want %+v", snap.Summary(), wantSum)
				}
				if !reflect.DeepEqual(snap.Messages(), want.Messages()) {
					t.Error("decoded list differs from a full open's")
				}
				if g%2 == 0 {
					mb.Close()
				}
			}()
		}
		wg.Wait()
		s.mu.Lock()
		st := s.boxes[root]
		s.mu.Unlock()
		if round < 2 && st != nil {
			t.Errorf("round %d: state still held after every mailbox closed", round)
		}
	}
	st := openCached(t, root)
	if st.pending != 1 || st.listings != 0 {
		t.Errorf("open from the cache: %d pending, %d listings; want 1, 0", st.pending, st.listings)
	}
}

// TestCacheRecordsUndecodable: a cache with a good checksum whose records
// do not decode (no Roost writes one) gives a pending snapshot holding the
// header's UIDs, closes its Changed, and the next Sync lists the mailbox.
func TestCacheRecordsUndecodable(t *testing.T) {
	root, want := cachedBox(t, 50)
	path := filepath.Join(root, cacheName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs := data[cacheHeadLen(data) : len(data)-4]
	recs[len(recs)-1] ^= 0x40 // the last record's last number
	binary.LittleEndian.PutUint32(data[len(data)-4:], crc32.Checksum(recs, castagnoli))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st := newState(t, root)
	snap, err := st.sync(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Len() != want.Len() || st.pending != 1 {
		t.Fatalf("pending snapshot of %d messages (%d pending opens), want %d", snap.Len(), st.pending, want.Len())
	}
	for i, m := range snap.Messages() {
		if m.UID != want.Messages()[i].UID || m.Key != "" {
			t.Fatalf("placeholder %d = %+v", i, m)
		}
	}
	select {
	case <-snap.Changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed after the records failed")
	}
	got, err := st.sync(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Messages(), want.Messages()) {
		t.Errorf("after the failed cache: %v, want %v", uidFlags(got.Messages()), uidFlags(want.Messages()))
	}
	if st.listings != 1 || st.pending != 1 {
		t.Errorf("%d listings, %d pending opens; want the one full open after the one from the cache", st.listings, st.pending)
	}
	if b, err := os.ReadFile(path); err != nil {
		t.Error(err)
	} else if _, err := parseCache(b); err != nil {
		t.Errorf("cache not replaced by a good one: %v", err)
	}
}
