package torture

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

var crashFolders = []string{"INBOX", "Work", "Projects"}

// TestCrashConsistency kills imapd, pop3d and lmtpd with SIGKILL at random
// moments while clients APPEND, COPY, MOVE, EXPUNGE, DELE+QUIT and deliver
// over LMTP, restarts them, and after every kill checks the Maildir against
// what the clients were told:
//
//   - every acknowledged message is present exactly once, an acknowledged
//     removal is gone, an interrupted operation left 0 or 1 whole copies
//     (an interrupted MOVE at least one), and no file in cur/ or new/ is
//     partial;
//   - an interrupted LMTP delivery retried with the same bytes (as Postfix
//     does) ends up stored once;
//   - imapd shows exactly the files, UIDVALIDITY never changes, a UID never
//     names a different message, UIDNEXT never goes back, and
//     dovecot-uidlist lists every file under the UID imapd reports;
//   - pop3d lists the same INBOX, each message with the UIDL its IMAP UID
//     gives (so leave-on-server POP3 clients never re-download);
//   - roostctl quota get agrees with the files, or roostctl quota recalc
//     makes it agree.
//
// Short form: 30 kills; make torture: 300.
func TestCrashConsistency(t *testing.T) {
	rounds := 20 // 30 kills: the fourth round of each four kills all three
	if long() {
		rounds = 200
	}
	s := newSite(t, "", "quota:\n  default: 1G\n")
	d := map[string]*daemon{"imapd": s.start("imapd"), "pop3d": s.start("pop3d"), "lmtpd": s.start("lmtpd")}
	c, err := imapLogin(d["imapd"].address(), "alice", "alicepw")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range crashFolders[1:] {
		if err := c.Create(f, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	c.Logout().Wait()
	c.Close()

	m := newModel(uint64(time.Now().UnixNano()))
	v := newVerifier(t, s, d["imapd"], crashFolders)
	v.pop3d = d["pop3d"]
	var retries []pendingDelivery
	victims := [][]string{{"imapd"}, {"pop3d"}, {"lmtpd"}, {"imapd", "pop3d", "lmtpd"}}
	start := time.Now()
	kills := 0
	for r := 0; r < rounds; r++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var retryMu sync.Mutex
		w := &workers{m: m, d: d, errorf: t.Errorf, onUnknownDelivery: func(p pendingDelivery) {
			retryMu.Lock()
			retries = append(retries, p)
			retryMu.Unlock()
		}}
		for _, f := range []func(context.Context){w.lmtp, w.appender, w.mover, w.mover, w.pop3} {
			wg.Add(1)
			go func() { defer wg.Done(); f(ctx) }()
		}
		time.Sleep(time.Duration(150+m.intn(400)) * time.Millisecond)
		vs := victims[r%len(victims)]
		for _, name := range vs {
			d[name].kill()
			kills++
		}
		time.Sleep(30 * time.Millisecond)
		cancel()
		wg.Wait()
		for _, name := range vs {
			d[name].launch()
		}
		// Postfix retries what it never saw acknowledged, byte for byte.
		for _, p := range retries {
			reply, err := lmtpSend(d["lmtpd"].address(), []string{p.rcpt}, p.msg)
			if err != nil || !strings.HasPrefix(reply[0], "250") {
				t.Fatalf("round %d: retried delivery of %s: %q %v", r, p.k.id, reply, err)
			}
			m.set(p.k, exactlyOne)
			m.count("LMTP retried after a kill")
		}
		retries = nil
		if !v.check(m, r) {
			t.Fatalf("round %d (killed %v): stopping at the first inconsistent state", r, vs)
		}
	}
	t.Logf("%d rounds, %d SIGKILLs in %v; quota drift fixed by recalc in %d rounds; tmp/ files left: %d\n%s",
		rounds, kills, time.Since(start).Round(time.Second), v.drifts, v.tmpFiles, m.statsString())
}

// pendingDelivery is an LMTP delivery whose reply never came.
type pendingDelivery struct {
	k    key
	rcpt string
	msg  []byte
}

// workers are the clients of one round; each loops until ctx is done,
// finishing the operation it is in, and reconnects after errors.
type workers struct {
	m                 *model
	d                 map[string]*daemon
	onUnknownDelivery func(pendingDelivery)
	errorf            func(format string, a ...any) // t.Errorf
}

func (w *workers) size() int {
	if w.m.intn(8) == 0 {
		return 200 << 10 // a longer write widens the window for a kill
	}
	return 500 + w.m.intn(3000)
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// crowded tells producers to wait: verification reads every file after
// each round, so the Maildir must not grow without bound in the long form.
func (w *workers) crowded(ctx context.Context) bool {
	if w.m.inFolder("INBOX")+w.m.inFolder("Work")+w.m.inFolder("Projects") < 200 {
		return false
	}
	pause(ctx)
	return true
}

func (w *workers) lmtp(ctx context.Context) {
	for ctx.Err() == nil {
		if w.crowded(ctx) {
			continue
		}
		id := w.m.newID("L")
		k, rcpt := key{"INBOX", id}, "alice@example.edu"
		if w.m.intn(4) == 0 {
			k, rcpt = key{"Work", id}, "alice+Work@example.edu"
		}
		msg := message(id, w.size())
		w.m.set(k, zeroOrOne)
		reply, err := lmtpSend(w.d["lmtpd"].address(), []string{rcpt}, msg)
		switch {
		case err == nil && strings.HasPrefix(reply[0], "250"):
			w.m.set(k, exactlyOne)
			w.m.count("LMTP delivered")
		case err == nil:
			w.m.count("LMTP refused: " + reply[0])
			w.onUnknownDelivery(pendingDelivery{k, rcpt, msg})
		default:
			w.m.count("LMTP interrupted")
			w.onUnknownDelivery(pendingDelivery{k, rcpt, msg})
			pause(ctx)
		}
		w.m.release(id)
	}
}

func (w *workers) imap(ctx context.Context) *imapclient.Client {
	for ctx.Err() == nil {
		c, err := imapLogin(w.d["imapd"].address(), "alice", "alicepw")
		if err == nil {
			return c
		}
		pause(ctx)
	}
	return nil
}

func (w *workers) appender(ctx context.Context) {
	var c *imapclient.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			if c = w.imap(ctx); c == nil {
				return
			}
		}
		if w.crowded(ctx) {
			continue
		}
		id := w.m.newID("A")
		k := key{crashFolders[w.m.intn(len(crashFolders))], id}
		msg := message(id, w.size())
		w.m.set(k, zeroOrOne)
		cmd := c.Append(k.folder, int64(len(msg)), nil)
		_, werr := cmd.Write(msg)
		cerr := cmd.Close()
		_, err := cmd.Wait()
		if err = errors.Join(werr, cerr, err); err == nil {
			w.m.set(k, exactlyOne)
			w.m.count("APPEND acknowledged")
		} else {
			if isServerError(err) {
				w.errorf("APPEND %s to %s refused by a running imapd: %v", id, k.folder, err)
			}
			w.m.count("APPEND interrupted")
			c.Close()
			c = nil
			pause(ctx)
		}
		w.m.release(id)
	}
}

// isServerError reports whether err is a tagged NO or BAD: an answer from
// a live server, never the result of a kill.
func isServerError(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

// uidsByID fetches the Message-IDs of the selected mailbox. A NO
// [EXPUNGEISSUED] (messages expunged by another session, RFC 5530) is
// answered with a NOOP, which delivers the expunges, and a new try.
func uidsByID(c *imapclient.Client) (map[string]imap.UID, error) {
	sect := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}
	var msgs []*imapclient.FetchMessageBuffer
	var err error
	for try := 0; try < 5; try++ {
		msgs, err = c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sect}}).Collect()
		if err == nil || !isNo(err) || !strings.Contains(err.Error(), "EXPUNGEISSUED") {
			break
		}
		if err := c.Noop().Wait(); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	out := map[string]imap.UID{}
	for _, msg := range msgs {
		if id, _ := parseMessage(msg.FindBodySection(sect)); id != "" {
			out[id] = msg.UID
		}
	}
	return out, nil
}

// mover COPYs, MOVEs and EXPUNGEs messages it owns for the operation.
func (w *workers) mover(ctx context.Context) {
	var c *imapclient.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			if c = w.imap(ctx); c == nil {
				return
			}
		}
		src := crashFolders[w.m.intn(len(crashFolders))]
		if err := w.moveOne(c, src); err != nil {
			c.Close()
			c = nil
			pause(ctx)
		}
	}
}

func (w *workers) moveOne(c *imapclient.Client, src string) error {
	if _, err := c.Select(src, nil).Wait(); err != nil {
		return err
	}
	byID, err := uidsByID(c)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	op := []string{"COPY", "MOVE", "EXPUNGE", "STORE"}[w.m.intn(4)]
	if w.m.inFolder(src) > 60 {
		op = "EXPUNGE" // keep the Maildir small enough to verify quickly
	}
	dest := ""
	if op == "COPY" || op == "MOVE" {
		for dest == "" || dest == src {
			dest = crashFolders[w.m.intn(len(crashFolders))]
		}
	}
	id, ok := w.m.pick(src, ids, dest)
	if !ok {
		time.Sleep(10 * time.Millisecond)
		return nil
	}
	defer w.m.release(id)
	uids := imap.UIDSetNum(byID[id])
	from, to := key{src, id}, key{dest, id}
	switch op {
	case "COPY":
		w.m.set(to, zeroOrOne)
		if _, err = c.Copy(uids, dest).Wait(); err == nil {
			w.m.set(to, exactlyOne)
		}
	case "MOVE":
		w.m.set(from, zeroOrOne)
		w.m.set(to, zeroOrOne)
		if _, err = c.Move(uids, dest).Wait(); err == nil {
			w.m.set(from, mayBeAbsent)
			w.m.set(to, exactlyOne)
		} else {
			w.m.addPair(from, to)
		}
	case "STORE":
		// Flags and keywords rename the file and may add a keyword to
		// dovecot-keywords; the message stays exactly once either way.
		kw := imap.Flag(fmt.Sprintf("$Torture%d", w.m.intn(20))) // Maildir holds 26 per folder
		err = c.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged, kw}}, nil).Close()
	case "EXPUNGE":
		w.m.set(from, zeroOrOne)
		err = c.Store(uids, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
		if err == nil {
			err = c.UIDExpunge(uids).Close()
		}
		if err == nil {
			w.m.set(from, mayBeAbsent)
		}
	}
	if err != nil {
		if isServerError(err) {
			w.errorf("%s of %s from %s refused by a running imapd: %v", op, id, src, err)
		}
		w.m.count(op + " interrupted")
		return err
	}
	w.m.count(op + " acknowledged")
	return nil
}

// pop3 reads and deletes a few INBOX messages per session (DELE, QUIT).
func (w *workers) pop3(ctx context.Context) {
	idOf := map[string]string{} // UIDL -> Message-ID
	for ctx.Err() == nil {
		if err := w.pop3Session(idOf); err != nil {
			pause(ctx)
		}
	}
}

func (w *workers) pop3Session(idOf map[string]string) error {
	tc, err := pop3Login(w.d["pop3d"].address(), "alice", "alicepw")
	if err != nil {
		return err
	}
	defer tc.Close()
	if r, err := tc.cmd("UIDL"); err != nil || !strings.HasPrefix(r, "+OK") {
		return fmt.Errorf("UIDL %q %v", r, err)
	}
	body, err := tc.multi()
	if err != nil {
		return err
	}
	numOf := map[string]int{}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		var n int
		var uidl string
		if _, err := fmt.Sscanf(l, "%d %s", &n, &uidl); err != nil {
			continue
		}
		id, ok := idOf[uidl]
		if !ok {
			if r, err := tc.cmd("TOP %d 0", n); err != nil || !strings.HasPrefix(r, "+OK") {
				return fmt.Errorf("TOP %q %v", r, err)
			}
			hdr, err := tc.multi()
			if err != nil {
				return err
			}
			id, _ = parseMessage(hdr)
			idOf[uidl] = id
		}
		numOf[id] = n
		ids = append(ids, id)
	}
	var mine []string
	for i := 0; i < 2; i++ {
		if id, ok := w.m.pick("INBOX", ids, ""); ok {
			mine = append(mine, id)
		}
	}
	defer func() {
		for _, id := range mine {
			w.m.release(id)
		}
	}()
	if len(mine) == 0 {
		tc.cmd("QUIT")
		time.Sleep(10 * time.Millisecond)
		return nil
	}
	for _, id := range mine {
		w.m.set(key{"INBOX", id}, zeroOrOne)
	}
	if r, err := tc.cmd("RETR %d", numOf[mine[0]]); err != nil || !strings.HasPrefix(r, "+OK") {
		w.m.count("DELE+QUIT interrupted")
		return fmt.Errorf("RETR %q %v", r, err)
	}
	data, err := tc.multi()
	if id, whole := parseMessage(data); err == nil && (id != mine[0] || !whole) {
		w.errorf("POP3 RETR of %s returned a different or partial message (%s, whole %v)", mine[0], id, whole)
	}
	for _, id := range mine {
		if r, err := tc.cmd("DELE %d", numOf[id]); err != nil || !strings.HasPrefix(r, "+OK") {
			w.m.count("DELE+QUIT interrupted")
			return fmt.Errorf("DELE %q %v", r, err)
		}
	}
	if r, err := tc.cmd("QUIT"); err != nil || !strings.HasPrefix(r, "+OK") {
		w.m.count("DELE+QUIT interrupted")
		return fmt.Errorf("QUIT %q %v", r, err)
	}
	for _, id := range mine {
		w.m.set(key{"INBOX", id}, mayBeAbsent)
	}
	w.m.count("DELE+QUIT acknowledged")
	return nil
}
