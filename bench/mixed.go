package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// mixedCommands are the commands a mixed-load session sends, in the order
// the report lists their latencies.
var mixedCommands = []string{"LOGIN", "LIST", "STATUS", "SELECT", "FETCH headers",
	"FETCH body", "STORE", "EXPUNGE", "APPEND", "LOGOUT"}

// latencies collects command latencies from many goroutines.
type latencies struct {
	mu  sync.Mutex
	by  map[string][]time.Duration
	ok  int
	bad int
}

func (l *latencies) add(cmd string, d time.Duration) {
	l.mu.Lock()
	l.by[cmd] = append(l.by[cmd], d)
	l.ok++
	l.mu.Unlock()
}

// mixedClient plays sessions for the users it owns. Each user belongs to
// one client only, so the client knows exactly what every mailbox must
// hold and can check each answer.
type mixedClient struct {
	id    int
	users []string
	// model maps user -> folder -> message count; a user is dropped after
	// an error and relearned from STATUS.
	model map[string]map[string]int
	rng   *rand.Rand
	gen   *msgGen
	seq   int
}

// runMixed is workload 2: Clients concurrent clients over the small users
// for Duration, each looping login, LIST, STATUS, SELECT, FETCH headers and
// a body, STORE, EXPUNGE, APPEND, LOGOUT.
func runMixed(ctx context.Context, e *env) error {
	nc := min(e.opts.MixedClients, e.spec.Users)
	if nc == 0 {
		return errors.New("mixed: no users or clients")
	}
	clients := make([]*mixedClient, nc)
	for i := range clients {
		clients[i] = &mixedClient{id: i, model: map[string]map[string]int{},
			rng: rand.New(rand.NewPCG(e.spec.Seed, uint64(i))), gen: newMsgGen(e.spec.Seed, fmt.Sprintf("mixed%d", i), "APPEND")}
	}
	for u := 0; u < e.spec.Users; u++ {
		c := clients[u%nc]
		name := UserName(u)
		c.users = append(c.users, name)
		c.model[name] = map[string]int{}
		for _, f := range smallFolders {
			c.model[name][f.Name] = f.Count
		}
	}
	lat := &latencies{by: map[string][]time.Duration{}}
	failures := &failureLog{max: 20}
	runCtx, cancel := context.WithTimeout(ctx, e.opts.MixedDuration)
	defer cancel()
	deadline, _ := runCtx.Deadline()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				user := c.users[c.rng.IntN(len(c.users))]
				if err := c.session(runCtx, e.srv.Addr("imap"), user, lat); err != nil {
					// The run ended mid-session: not a failure. A dial may see
					// the deadline a moment before runCtx reports it.
					if runCtx.Err() != nil || !time.Now().Before(deadline) {
						return
					}
					lat.mu.Lock()
					lat.bad++
					lat.mu.Unlock()
					failures.add(fmt.Errorf("%s: %w", user, err))
					delete(c.model, user)
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	name := e.srv.Name()
	e.res.Add(name, fmt.Sprintf("2 mixed: commands/s, %d clients", nc), "cmd/s", true, float64(lat.ok)/elapsed.Seconds())
	e.res.Add(name, "2 mixed: failed or wrong sessions", "count", false, float64(lat.bad))
	for _, cmd := range mixedCommands {
		s := slices.Clone(lat.by[cmd])
		slices.Sort(s)
		if len(s) == 0 {
			continue
		}
		for _, p := range []float64{50, 95, 99} {
			e.res.Add(name, fmt.Sprintf("2 mixed: %s p%.0f", cmd, p), "ms", false, float64(percentile(s, p))/1e6)
		}
	}
	for _, err := range failures.list() {
		e.res.Fail(name, "2 mixed", err)
	}
	if lat.ok == 0 {
		return errors.New("mixed: no command succeeded")
	}
	return nil
}

// failureLog keeps the first few errors of a workload.
type failureLog struct {
	mu   sync.Mutex
	max  int
	n    int
	errs []error
}

func (f *failureLog) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.errs) < f.max {
		f.errs = append(f.errs, err)
	}
}

func (f *failureLog) list() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n > len(f.errs) {
		return append(slices.Clone(f.errs), fmt.Errorf("… %d failures in all", f.n))
	}
	return slices.Clone(f.errs)
}

// timed runs one command and records its latency if it succeeded.
func timed(lat *latencies, cmd string, f func() error) error {
	start := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	lat.add(cmd, time.Since(start))
	return nil
}

func (m *mixedClient) session(ctx context.Context, addr, user string, lat *latencies) error {
	model := m.model[user]
	if model == nil {
		model = map[string]int{}
		m.model[user] = model
	}
	var c *imapConn
	err := timed(lat, "LOGIN", func() (err error) {
		c, err = dialIMAP(ctx, addr, user)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()

	if err := timed(lat, "LIST", func() error {
		list, err := c.List("", "*", nil).Collect()
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, l := range list {
			names[l.Mailbox] = true
		}
		for _, f := range smallFolders {
			if !names[f.Name] {
				return fmt.Errorf("folder %q missing from %d listed", f.Name, len(list))
			}
		}
		return nil
	}); err != nil {
		return err
	}

	folder := smallFolders[m.rng.IntN(len(smallFolders))].Name
	if err := timed(lat, "STATUS", func() error {
		sd, err := c.Status(folder, &imap.StatusOptions{NumMessages: true, UIDNext: true, NumUnseen: true}).Wait()
		if err != nil {
			return err
		}
		if sd.NumMessages == nil {
			return fmt.Errorf("%s: no MESSAGES", folder)
		}
		want, known := model[folder]
		if known && int(*sd.NumMessages) != want {
			return fmt.Errorf("%s: MESSAGES %d, want %d", folder, *sd.NumMessages, want)
		}
		model[folder] = int(*sd.NumMessages)
		return nil
	}); err != nil {
		return err
	}

	n := model[folder]
	if err := timed(lat, "SELECT", func() error {
		sd, err := c.Select(folder, nil).Wait()
		if err != nil {
			return err
		}
		if int(sd.NumMessages) != n {
			return fmt.Errorf("%s: EXISTS %d, want %d", folder, sd.NumMessages, n)
		}
		return nil
	}); err != nil {
		return err
	}

	if n > 0 {
		if err := m.fetchAndFlag(c, lat, n); err != nil {
			return fmt.Errorf("%s: %w", folder, err)
		}
	}
	if n >= 3 {
		k := uint32(1 + m.rng.IntN(n))
		if err := timed(lat, "STORE", func() error {
			return c.Store(imap.SeqSetNum(k), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
		}); err != nil {
			return err
		}
		if err := timed(lat, "EXPUNGE", func() error {
			seqs, err := c.Expunge().Collect()
			if err != nil {
				return err
			}
			if len(seqs) != 1 || seqs[0] != k {
				return fmt.Errorf("%s: expunged %v, want [%d]", folder, seqs, k)
			}
			return nil
		}); err != nil {
			return err
		}
		model[folder]--
	}

	target := smallFolders[m.rng.IntN(len(smallFolders))].Name
	m.seq++
	id := fmt.Sprintf("mixed%d-APPEND-%06d", m.id, m.seq)
	msg := bytes.ReplaceAll(m.gen.next(m.seq, id, 1500).Body, []byte("\n"), []byte("\r\n"))
	if err := timed(lat, "APPEND", func() error {
		ap := c.Append(target, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
		if _, err := ap.Write(msg); err != nil {
			return err
		}
		if err := ap.Close(); err != nil {
			return err
		}
		_, err := ap.Wait()
		return err
	}); err != nil {
		return fmt.Errorf("to %s: %w", target, err)
	}
	if _, known := model[target]; known {
		model[target]++
	}

	return timed(lat, "LOGOUT", func() error { return c.Logout().Wait() })
}

// fetchAndFlag fetches the headers of the last ten messages and one whole
// message, checking sizes and the X-Bench-Id header, then flags it.
func (m *mixedClient) fetchAndFlag(c *imapConn, lat *latencies, n int) error {
	first := max(1, n-9)
	if err := timed(lat, "FETCH headers", func() error {
		msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: uint32(first), Stop: uint32(n)}}, &imap.FetchOptions{
			UID: true, Flags: true, RFC822Size: true,
			BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}},
		}).Collect()
		if err != nil {
			return err
		}
		if len(msgs) != n-first+1 {
			return fmt.Errorf("%d messages, want %d", len(msgs), n-first+1)
		}
		for _, msg := range msgs {
			if len(msg.BodySection) != 1 || !bytes.Contains(msg.BodySection[0].Bytes, []byte("\r\nX-Bench-Id: ")) {
				return fmt.Errorf("message %d: header without X-Bench-Id", msg.SeqNum)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	k := uint32(1 + m.rng.IntN(n))
	var uid imap.UID
	var flagged bool
	if err := timed(lat, "FETCH body", func() error {
		msgs, err := c.Fetch(imap.SeqSetNum(k), &imap.FetchOptions{
			UID: true, Flags: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil {
			return err
		}
		if len(msgs) != 1 || len(msgs[0].BodySection) != 1 {
			return fmt.Errorf("message %d: no body", k)
		}
		body := msgs[0].BodySection[0].Bytes
		if int64(len(body)) != msgs[0].RFC822Size {
			return fmt.Errorf("message %d: BODY[] %d bytes, RFC822.SIZE %d", k, len(body), msgs[0].RFC822Size)
		}
		if !bytes.Contains(body, []byte("\r\nX-Bench-Id: ")) {
			return fmt.Errorf("message %d: body without X-Bench-Id", k)
		}
		uid, flagged = msgs[0].UID, hasFlag(msgs[0].Flags, imap.FlagFlagged)
		return nil
	}); err != nil {
		return err
	}
	// Toggle \Flagged, so the flags really change and the server must
	// answer with a FETCH showing the new state.
	op := imap.StoreFlagsAdd
	if flagged {
		op = imap.StoreFlagsDel
	}
	return timed(lat, "STORE", func() error {
		msgs, err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect()
		if err != nil {
			return err
		}
		if len(msgs) != 1 || hasFlag(msgs[0].Flags, imap.FlagFlagged) == flagged {
			return fmt.Errorf("UID %d: STORE did not change \\Flagged (had it: %v; answer %d FETCH)", uid, flagged, len(msgs))
		}
		return nil
	})
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	return slices.ContainsFunc(flags, func(g imap.Flag) bool { return strings.EqualFold(string(g), string(f)) })
}
