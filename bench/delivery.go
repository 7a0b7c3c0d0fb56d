package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// runLMTP is workload 3: LMTPClients concurrent LMTP connections deliver
// LMTPMessages messages of LMTPSizeKB each to the small users, one
// recipient per transaction. Afterwards the Maildirs on disk must hold
// exactly that many more messages.
func runLMTP(ctx context.Context, e *env) error {
	users := min(e.spec.Users, 100)
	if users == 0 || e.opts.LMTPMessages == 0 {
		return errors.New("lmtp: no users or messages")
	}
	// Only this workload's messages count: a server may still be finishing
	// an APPEND from the mixed load that ran before.
	before, err := countMarked(e.root, users, lmtpMarker)
	if err != nil {
		return err
	}
	g := newMsgGen(e.spec.Seed, "lmtp", "INBOX")
	body := g.next(0, "lmtp-INBOX-000000", e.opts.LMTPSizeKB*1024-1200).Body
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, e.opts.LMTPClients)
	start := time.Now()
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = lmtpWorker(ctx, e.srv.Addr("lmtp"), body, users, &next, int64(e.opts.LMTPMessages))
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	after, err := countMarked(e.root, users, lmtpMarker)
	if err != nil {
		return err
	}
	if after-before != e.opts.LMTPMessages {
		return fmt.Errorf("lmtp: %d messages delivered and acknowledged, but the Maildirs grew by %d", e.opts.LMTPMessages, after-before)
	}
	e.res.Add(e.srv.Name(), fmt.Sprintf("3 lmtp: delivery, %d clients, %d KB", e.opts.LMTPClients, e.opts.LMTPSizeKB),
		"msgs/s", true, float64(e.opts.LMTPMessages)/d.Seconds())
	return nil
}

func lmtpWorker(ctx context.Context, addr string, body []byte, users int, next *atomic.Int64, total int64) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("bench.test"); err != nil {
		return fmt.Errorf("LHLO: %w", err)
	}
	for {
		k := next.Add(1) - 1
		if k >= total {
			return c.Quit()
		}
		rcpt := UserName(int(k)%users) + "@" + benchDomain
		if err := c.Mail("sender@example.org", nil); err != nil {
			return fmt.Errorf("MAIL: %w", err)
		}
		if err := c.Rcpt(rcpt, nil); err != nil {
			return fmt.Errorf("RCPT %s: %w", rcpt, err)
		}
		w, err := c.Data()
		if err != nil {
			return fmt.Errorf("DATA: %w", err)
		}
		msg := slices.Concat([]byte(fmt.Sprintf("X-Bench-Delivery: %d\n", k)), body)
		if _, err := w.Write(msg); err != nil {
			return fmt.Errorf("DATA: %w", err)
		}
		resp, err := w.CloseWithLMTPResponse()
		if err != nil {
			return fmt.Errorf("DATA to %s: %w", rcpt, err)
		}
		if len(resp) != 1 {
			return fmt.Errorf("DATA to %s: %d LMTP replies, want 1", rcpt, len(resp))
		}
	}
}

// lmtpMarker is in the header of every message the lmtp workload sends.
const lmtpMarker = "\nX-Bench-Id: lmtp-"

// countMarked counts the INBOX messages of the first users small users
// whose header holds marker.
func countMarked(root string, users int, marker string) (int, error) {
	total := 0
	buf := make([]byte, 16<<10)
	for u := 0; u < users; u++ {
		dir := maildirPath(root, UserName(u), "INBOX")
		for _, sub := range []string{"new", "cur"} {
			ents, err := os.ReadDir(filepath.Join(dir, sub))
			if err != nil {
				return 0, err
			}
			for _, ent := range ents {
				f, err := os.Open(filepath.Join(dir, sub, ent.Name()))
				if err != nil {
					return 0, err
				}
				n, _ := io.ReadFull(f, buf)
				f.Close()
				hdr, _, _ := bytes.Cut(buf[:n], []byte("\n\n"))
				if bytes.Contains(hdr, []byte(marker)) {
					total++
				}
			}
		}
	}
	return total, nil
}

// runPOP3 is workload 5: POP3Sessions concurrent sessions, each logging in
// as a different small user and downloading every INBOX message (RETR
// without DELE), checking each against its LIST size. The first round is
// each server's first look at these mailboxes (it builds its index); the
// second is a client's next poll.
func runPOP3(ctx context.Context, e *env) error {
	// One session per user: a server may lock a maildrop (RFC 1939 §8).
	sessions := min(e.opts.POP3Sessions, e.spec.Users)
	if sessions == 0 {
		return errors.New("pop3: no users or sessions")
	}
	for _, round := range []string{"first access", "again"} {
		durs := make([]time.Duration, sessions)
		errs := make([]error, sessions)
		var msgs atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < sessions; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.Now()
				n, err := popDownload(ctx, e.srv.Addr("pop3"), UserName(i), smallFolders[0].Count)
				durs[i] = time.Since(t)
				errs[i] = err
				msgs.Add(int64(n))
			}()
		}
		wg.Wait()
		d := time.Since(start)
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s: %w", round, err)
		}
		slices.Sort(durs)
		e.time(fmt.Sprintf("5 pop3: %d concurrent downloads, %s", sessions, round), d)
		e.time("5 pop3: one session (login…QUIT) p50, "+round, percentile(durs, 50))
		e.res.Add(e.srv.Name(), "5 pop3: messages/s, "+round, "msgs/s", true, float64(msgs.Load())/d.Seconds())
	}
	return nil
}

// popDownload runs one POP3 session: STAT, LIST, UIDL, RETR of every
// message, QUIT. It returns the number of messages downloaded.
func popDownload(ctx context.Context, addr, user string, want int) (int, error) {
	p, err := dialPOP3(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if err := p.Login(user, Password(user)); err != nil {
		return 0, fmt.Errorf("%s: %w", user, err)
	}
	n, total, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", user, err)
	}
	if n != want {
		return 0, fmt.Errorf("%s: STAT says %d messages, want %d", user, n, want)
	}
	sizes, err := p.listing("LIST")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", user, err)
	}
	uidls, err := p.listing("UIDL")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", user, err)
	}
	if len(sizes) != n || len(uidls) != n {
		return 0, fmt.Errorf("%s: LIST %d and UIDL %d lines for %d messages", user, len(sizes), len(uidls), n)
	}
	var got int64
	var buf bytes.Buffer
	for k := 1; k <= n; k++ {
		buf.Reset()
		size, err := p.Retr(k, &buf)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", user, err)
		}
		if fmt.Sprint(size) != sizes[k] {
			return 0, fmt.Errorf("%s: RETR %d gave %d bytes, LIST said %s", user, k, size, sizes[k])
		}
		if !bytes.Contains(buf.Bytes(), []byte("\r\nX-Bench-Id: "+user+"-INBOX-")) {
			return 0, fmt.Errorf("%s: RETR %d is not one of %s's messages", user, k, user)
		}
		got += size
	}
	if got != total {
		return 0, fmt.Errorf("%s: downloaded %d bytes, STAT said %d", user, got, total)
	}
	return n, p.Quit()
}
