package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runIdle is workload 4: for each count in Idle, that many clients log in
// (spread over the small users), SELECT INBOX and IDLE; the server's memory
// grows by RSS (and PSS, which splits shared pages fairly between
// Dovecot's many processes) per connection.
func runIdle(ctx context.Context, e *env) error {
	if e.spec.Users == 0 {
		return errors.New("idle: no users")
	}
	var errs []error
	for _, n := range e.opts.Idle {
		if err := idleOnce(ctx, e, n); err != nil {
			errs = append(errs, fmt.Errorf("%d idle clients: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// fdRoom says whether this process may open n more connections.
func fdRoom(n int) error {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == "Max" && f[1] == "open" {
			soft, err := strconv.Atoi(f[3])
			if err == nil && soft < n+200 {
				return fmt.Errorf("ulimit -n is %d, need about %d: raise it (ulimit -n %d) or use fewer idle clients", soft, n+200, n+500)
			}
		}
	}
	return nil
}

// memRoom says whether the machine has memory for n more server
// connections, at a generous 2 MiB each (Dovecot needs a process each).
func memRoom(n int) error {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if need := int64(n) * 2048; kb < need {
				return fmt.Errorf("only %d MiB of memory available, %d idle clients may need %d MiB", kb/1024, n, need/1024)
			}
		}
	}
	return nil
}

func idleOnce(ctx context.Context, e *env, n int) error {
	if err := fdRoom(n); err != nil {
		return err
	}
	if err := memRoom(n); err != nil {
		e.res.Note(e.srv.Name(), fmt.Sprintf("4 idle: %d clients skipped: %v", n, err))
		return nil
	}
	time.Sleep(500 * time.Millisecond) // let the previous workload's processes exit
	baseRSS, basePSS := rssKB(e.srv.PIDs()), pssKB(e.srv.PIDs())
	// Closing the connections at the end is enough: a client that vanishes
	// mid-IDLE is an everyday event for a server.
	conns := make([]*imapConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// Connect with bounded parallelism, as a burst of clients would.
	start := time.Now()
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialIMAP(ctx, e.srv.Addr("imap"), UserName(i%e.spec.Users))
			if err == nil {
				if _, err = c.Select("INBOX", nil).Wait(); err == nil {
					if _, err = c.Idle(); err == nil {
						conns[i] = c
						return
					}
				}
				c.Close()
			}
			mu.Lock()
			if firstErr == nil {
				firstErr = fmt.Errorf("client %d: %w", i, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	setup := time.Since(start)
	time.Sleep(time.Second) // let the server settle after the burst
	pids := e.srv.PIDs()
	rss, pss := rssKB(pids), pssKB(pids)
	for i, c := range conns {
		select {
		case <-c.Closed():
			return fmt.Errorf("client %d: server closed an idle connection", i)
		default:
		}
	}
	name := e.srv.Name()
	e.time(fmt.Sprintf("4 idle: %d clients connect+login+SELECT+IDLE", n), setup)
	e.res.Add(name, fmt.Sprintf("4 idle: RSS per connection, %d clients", n), "KiB", false, float64(rss-baseRSS)/float64(n))
	e.res.Add(name, fmt.Sprintf("4 idle: PSS per connection, %d clients", n), "KiB", false, float64(pss-basePSS)/float64(n))
	e.res.peak(name, rss)
	e.res.idlePeak(name, pss)
	return nil
}
