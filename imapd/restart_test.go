package imapd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestartSelectFromCache: after a restart, SELECT of a 3,000-message
// INBOX is answered from the store's cache, before the list is decoded;
// what the client sees then (SELECT data, every message's flags, a STORE, a
// delivery during IDLE) is what it saw before the restart.
func TestRestartSelectFromCache(t *testing.T) {
	ts := newTestServer(t, nil)
	box := ts.maildir("alice")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(box, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(box, "dovecot-keywords"), []byte("0 $Junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	infos := []string{"S", "", "FS", "Sa", "ST"}
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i)
		// Sizes in the names: no background measurer rewrites the uidlist.
		name := fmt.Sprintf("%d.M%dP1.host,S=%d,W=%d:2,%s", 1700000000+i, i, len(body), len(body)+3, infos[i%len(infos)])
		if err := os.WriteFile(filepath.Join(box, "cur", name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Second)
	for _, d := range []string{"cur", "new", "dovecot-keywords"} {
		if err := os.Chtimes(filepath.Join(box, d), past, past); err != nil {
			t.Fatal(err)
		}
	}
	look := func(ts *testServer) (sel, flags string) {
		r := ts.raw(t)
		r.login("alice", alicePass)
		sel = strings.Join(r.cmd("EXAMINE INBOX"), "\n")
		flags = strings.Join(r.cmd("FETCH 1:* (UID FLAGS)"), "\n")
		r.cmd("LOGOUT")
		return sel, flags
	}
	sel1, flags1 := look(ts)
	if !strings.Contains(sel1, fmt.Sprintf("* %d EXISTS", n)) || !strings.Contains(sel1, "[UNSEEN 2]") ||
		strings.Count(flags1, " FETCH (") != n || strings.Count(flags1, `\Deleted`) != n/5 {
		t.Fatalf("before the restart:\n%s\n%d FETCH lines", sel1, strings.Count(flags1, " FETCH ("))
	}
	// The store writes its cache for good once the uidlist it wrote has
	// been quiet for a second: a session's Sync after that does it (as does
	// a timer, which a loaded machine may delay).
	cache, uidlist := filepath.Join(box, "roost-cache"), filepath.Join(box, "dovecot-uidlist")
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, errC := os.Stat(cache)
		u, errU := os.Stat(uidlist)
		if errC == nil && errU == nil && c.ModTime().Sub(u.ModTime()) >= time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no settled roost-cache after the first server's sessions")
		}
		time.Sleep(200 * time.Millisecond)
		look(ts)
	}

	ts = ts.restart(t, nil)
	sel2, flags2 := look(ts)
	if sel2 != sel1 || flags2 != flags1 {
		t.Errorf("after the restart:\n%s\nwant\n%s\n(flags equal: %v)", sel2, sel1, flags2 == flags1)
	}
	// And it lives on: a change, and a delivery seen during IDLE.
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	if out := strings.Join(r.cmd(`STORE 2 +FLAGS (\Flagged)`), "\n"); !strings.Contains(out, `\Flagged`) {
		t.Errorf("STORE after the restart:\n%s", out)
	}
	r.send("idle IDLE\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+") {
		t.Fatal(l)
	}
	ts.deliver(t, "alice", "", "Subject: new\n\nnew\n")
	r.expectWithin(2*time.Second, fmt.Sprintf("* %d EXISTS", n+1))
	r.send("DONE\r\n")
	r.expectWithin(2*time.Second, "idle OK")
}
