package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

var soakUsers = []string{"alice", "bob", "carol"}

// ledger is the clients' record: what was delivered to whom, and which
// removals (POP3 DELE+QUIT, IMAP EXPUNGE) the servers acknowledged.
type ledger struct {
	mu        sync.Mutex
	delivered map[key]bool   // key{user, id}
	removed   map[key]string // key{user, id} -> folder it was removed from
	badFetch  map[key]string // FETCH BODY[] returned something else than the message
	stats     map[string]int
	errs      []string
}

func (l *ledger) count(s string) {
	l.mu.Lock()
	l.stats[s]++
	l.mu.Unlock()
}

func (l *ledger) fail(format string, a ...any) {
	l.mu.Lock()
	if len(l.errs) < 50 {
		l.errs = append(l.errs, fmt.Sprintf(format, a...))
	}
	l.mu.Unlock()
}

// TestSoak runs mixed LMTP, IMAP and POP3 load on three users' shared
// Maildirs (20 seconds; make torture: 10 minutes), then checks the
// accounting: every delivered message is present exactly once in its
// user's Maildir, or was removed by an acknowledged DELE+QUIT or EXPUNGE
// (and is then absent from that folder); maildirsize matches the files
// exactly (nothing was killed); and each daemon's goroutines (go_goroutines
// from its metrics endpoint) and VmRSS stay flat: the second half's peak
// is within 1.5x (+slack) of the first half's, and goroutines return to
// the idle level once clients leave.
func TestSoak(t *testing.T) {
	dur := 20 * time.Second
	if long() {
		dur = 10 * time.Minute
	}
	s := newSite(t, "", "")
	d := map[string]*daemon{"imapd": s.start("imapd"), "pop3d": s.start("pop3d"), "lmtpd": s.start("lmtpd")}
	names := []string{"imapd", "pop3d", "lmtpd"}
	idle := map[string]float64{}
	for _, n := range names {
		idle[n] = d[n].metric("go_goroutines")
	}
	l := &ledger{delivered: map[key]bool{}, removed: map[key]string{}, badFetch: map[key]string{}, stats: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	var seq sync.Mutex
	n := 0
	nextID := func() string {
		seq.Lock()
		defer seq.Unlock()
		n++
		return fmt.Sprintf("S%07d", n)
	}
	run := func(f func(context.Context, *rand.Rand), seed uint64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			for ctx.Err() == nil {
				f(ctx, rng)
			}
		}()
	}
	for i := range 2 {
		run(func(ctx context.Context, rng *rand.Rand) { soakDeliver(d["lmtpd"], l, rng, nextID()) }, uint64(i))
	}
	for i := range 3 {
		// One client moves: two sessions moving the same message at once
		// may both copy it (MOVE is copy + expunge in Maildir, as in
		// Dovecot), which the accounting below could not tell from a bug.
		run(func(ctx context.Context, rng *rand.Rand) { soakIMAP(d["imapd"], l, rng, i == 0) }, uint64(10+i))
	}
	for i := range 2 {
		run(func(ctx context.Context, rng *rand.Rand) { soakPOP3(d["pop3d"], l, rng) }, uint64(20+i))
	}

	// Sample goroutines and RSS while the load runs.
	type sample struct{ g, rss float64 }
	samples := map[string][]sample{}
	tick := time.NewTicker(dur / 20)
	for sampling := true; sampling; {
		select {
		case <-ctx.Done():
			sampling = false
		case <-tick.C:
			for _, n := range names {
				samples[n] = append(samples[n], sample{d[n].metric("go_goroutines"), float64(d[n].procStatus("VmRSS"))})
			}
		}
	}
	tick.Stop()
	wg.Wait()

	for _, n := range names {
		if !d[n].alive() {
			t.Fatalf("%s died during the soak", n)
		}
		ss := samples[n]
		half := len(ss) / 2
		var g1, g2, r1, r2 float64
		for i, x := range ss {
			if i < half {
				g1, r1 = max(g1, x.g), max(r1, x.rss)
			} else {
				g2, r2 = max(g2, x.g), max(r2, x.rss)
			}
		}
		t.Logf("%s: goroutines idle %.0f, peak first half %.0f, second half %.0f; VmRSS peak %.1f MB then %.1f MB",
			n, idle[n], g1, g2, r1/(1<<20), r2/(1<<20))
		if g2 > 1.5*g1+20 {
			t.Errorf("%s: goroutines grow under steady load: %.0f then %.0f", n, g1, g2)
		}
		if r2 > 1.5*r1+16<<20 {
			t.Errorf("%s: VmRSS grows under steady load: %.1f MB then %.1f MB", n, r1/(1<<20), r2/(1<<20))
		}
		// Sessions are gone; their goroutines must be too.
		var g float64
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if g = d[n].metric("go_goroutines"); g <= idle[n]+10 || time.Now().After(deadline) {
				break
			}
		}
		if g > idle[n]+10 {
			t.Errorf("%s: %.0f goroutines after every client left, %.0f when idle before: a leak", n, g, idle[n])
		}
	}

	// Accounting.
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.errs {
		t.Errorf("during the soak: %s", e)
	}
	present := map[key]int{}
	where := map[key]string{}
	for _, u := range soakUsers {
		v, err := scanMaildir(s.maildir(u))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range v.problems {
			t.Errorf("%s: %s", u, p)
		}
		for _, f := range v.files {
			present[key{u, f.id}]++
			where[key{u, f.id}] = f.folder
		}
		// maildirsize may drift under concurrent writers (Maildir++ accepts
		// that and recalculates); roostctl quota recalc must make it exact.
		size, msgs := v.bytes()
		if q := s.quotaGet(u); q.UsedBytes != size || q.Messages != msgs {
			t.Logf("%s: maildirsize says %d bytes in %d messages, the files %d in %d (nothing was killed): recalc",
				u, q.UsedBytes, q.Messages, size, msgs)
			if out, errOut, code := s.roostctl("quota", "recalc", u); code != 0 {
				t.Fatalf("roostctl quota recalc %s: exit %d\n%s%s", u, code, out, errOut)
			}
			if q := s.quotaGet(u); q.UsedBytes != size || q.Messages != msgs {
				t.Errorf("%s: after recalc maildirsize says %d bytes in %d messages, the files %d in %d", u, q.UsedBytes, q.Messages, size, msgs)
			}
		}
	}
	for k := range l.delivered {
		switch n := present[k]; {
		case n > 1:
			t.Errorf("%s's %s is present %d times", k.folder, k.id, n)
		case n == 0 && l.removed[k] == "":
			t.Errorf("%s's %s was delivered, never removed by an acknowledged DELE or EXPUNGE, and is gone", k.folder, k.id)
		case n == 1 && l.removed[k] != "" && l.removed[k] == where[k]:
			t.Errorf("%s's %s is still in %s after an acknowledged removal", k.folder, k.id, where[k])
		}
	}
	for k, what := range l.badFetch {
		if present[k] > 0 {
			t.Errorf("FETCH BODY[] of %s's %s returned %s, not the message, which still exists: a client would cache that for its UID", k.folder, k.id, what)
		} else {
			l.stats["FETCH BODY[] empty: message removed meanwhile"]++
		}
	}
	for k, n := range present {
		if !l.delivered[k] {
			t.Errorf("%s has %d copies of %s, which was never acknowledged as delivered", k.folder, n, k.id)
		}
	}
	var ks []string
	for k, v := range l.stats {
		ks = append(ks, fmt.Sprintf("  %-40s %d", k, v))
	}
	sort.Strings(ks)
	t.Logf("soak of %v: %d messages delivered, %d removals acknowledged, %d present at the end\n%s",
		dur, len(l.delivered), len(l.removed), len(present), strings.Join(ks, "\n"))
}

func soakDeliver(lmtpd *daemon, l *ledger, rng *rand.Rand, id string) {
	var users []string
	for _, u := range soakUsers {
		if rng.IntN(2) == 0 {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		users = []string{soakUsers[rng.IntN(len(soakUsers))]}
	}
	rcpts := make([]string, len(users))
	for i, u := range users {
		rcpts[i] = u + "@example.edu"
	}
	size := 500 + rng.IntN(4000)
	if rng.IntN(20) == 0 {
		size = 300 << 10
	}
	replies, err := lmtpSend(lmtpd.address(), rcpts, message(id, size))
	if err != nil {
		l.fail("LMTP %s: %v", id, err)
		return
	}
	for i, r := range replies {
		if !strings.HasPrefix(r, "250") {
			l.fail("LMTP %s to %s: %q", id, rcpts[i], r)
			continue
		}
		l.mu.Lock()
		l.delivered[key{users[i], id}] = true
		l.mu.Unlock()
		l.count("LMTP delivered")
	}
}

func soakIMAP(imapd *daemon, l *ledger, rng *rand.Rand, mover bool) {
	u := soakUsers[rng.IntN(len(soakUsers))]
	c, err := imapLogin(imapd.address(), u, u+"pw")
	if err != nil {
		l.fail("IMAP login %s: %v", u, err)
		return
	}
	defer c.Close()
	folder := "INBOX"
	if rng.IntN(4) == 0 {
		folder = "Archive"
	}
	if _, err := c.Select(folder, nil).Wait(); err != nil {
		l.fail("IMAP SELECT %s %s: %v", u, folder, err)
		return
	}
	byID, err := uidsByID(c)
	if isNo(err) && strings.Contains(err.Error(), "EXPUNGEISSUED") {
		// Other sessions kept expunging through every retry.
		l.count("IMAP FETCH of a message expunged elsewhere")
		return
	}
	if err != nil {
		l.fail("IMAP FETCH %s: %v", u, err)
		return
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for op := 0; op < 4 && len(ids) > 0; op++ {
		id := ids[rng.IntN(len(ids))]
		uids := imap.UIDSetNum(byID[id])
		switch rng.IntN(5) {
		case 0: // read
			sect := &imap.FetchItemBodySection{}
			msgs, err := c.Fetch(uids, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
			if isNo(err) && strings.Contains(err.Error(), "EXPUNGEISSUED") {
				l.count("IMAP FETCH of a message expunged elsewhere")
				continue
			}
			if err != nil {
				l.fail("IMAP FETCH body %s: %v", u, err)
				return
			}
			if len(msgs) == 1 {
				if got, whole := parseMessage(msgs[0].FindBodySection(sect)); got != id || !whole {
					// Fine only if the message was removed meanwhile
					// (checked at the end): a client caches a UID's body.
					l.mu.Lock()
					l.badFetch[key{u, id}] = fmt.Sprintf("%d bytes", len(msgs[0].FindBodySection(sect)))
					l.mu.Unlock()
				}
			}
			l.count("IMAP FETCH")
		case 1: // flags
			if err := c.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged, "$Label1"}}, nil).Close(); err != nil {
				l.fail("IMAP STORE %s: %v", u, err)
				return
			}
			l.count("IMAP STORE")
		case 2: // move from INBOX to Archive; never back, so that a removal
			// acknowledged in a folder means absent from it for good
			if folder != "INBOX" || !mover {
				continue
			}
			if _, err := c.Move(uids, "Archive").Wait(); err != nil {
				l.count("IMAP MOVE refused")
			} else {
				l.count("IMAP MOVE")
			}
		case 3: // expunge
			if err := c.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
				l.fail("IMAP STORE \\Deleted %s: %v", u, err)
				return
			}
			// OK means the UID is gone, whoever removed it.
			if err := c.UIDExpunge(uids).Close(); err != nil {
				l.fail("IMAP UID EXPUNGE %s: %v", u, err)
				return
			}
			l.mu.Lock()
			l.removed[key{u, id}] = folder
			l.mu.Unlock()
			l.count("IMAP EXPUNGE")
		case 4: // IDLE briefly while deliveries arrive
			idle, err := c.Idle()
			if err != nil {
				l.fail("IMAP IDLE %s: %v", u, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
			if err := idle.Close(); err != nil {
				l.fail("IMAP IDLE done %s: %v", u, err)
				return
			}
			idle.Wait()
			l.count("IMAP IDLE")
		}
	}
	c.Logout().Wait()
}

func soakPOP3(pop3d *daemon, l *ledger, rng *rand.Rand) {
	u := soakUsers[rng.IntN(len(soakUsers))]
	p, err := pop3Login(pop3d.address(), u, u+"pw")
	if err != nil {
		if strings.Contains(err.Error(), "IN-USE") {
			l.count("POP3 maildrop in use")
			time.Sleep(20 * time.Millisecond)
			return
		}
		l.fail("POP3 login %s: %v", u, err)
		return
	}
	defer p.Close()
	r, err := p.cmd("STAT")
	var count, size int
	if err != nil || !strings.HasPrefix(r, "+OK") {
		l.fail("POP3 STAT %s: %q %v", u, r, err)
		return
	}
	fmt.Sscanf(r, "+OK %d %d", &count, &size)
	var dele []string
	for i := 0; i < 2 && count > 0; i++ {
		n := 1 + rng.IntN(count)
		if r, err := p.cmd("RETR %d", n); err != nil || !strings.HasPrefix(r, "+OK") {
			// Expunged over IMAP since the session began.
			l.count("POP3 RETR refused")
			continue
		}
		data, err := p.multi()
		id, whole := parseMessage(data)
		if err != nil || !whole {
			l.fail("POP3 RETR %d of %s: partial (%v)", n, u, err)
			return
		}
		l.count("POP3 RETR")
		if rng.IntN(2) == 0 {
			if r, err := p.cmd("DELE %d", n); err == nil && strings.HasPrefix(r, "+OK") {
				dele = append(dele, id)
			}
		}
	}
	if r, err := p.cmd("QUIT"); err != nil || !strings.HasPrefix(r, "+OK") {
		l.fail("POP3 QUIT %s: %q %v", u, r, err)
		return
	}
	l.mu.Lock()
	for _, id := range dele {
		l.removed[key{u, id}] = "INBOX"
		l.stats["POP3 DELE+QUIT"]++
	}
	l.mu.Unlock()
}
