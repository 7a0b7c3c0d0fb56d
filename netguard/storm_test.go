package netguard

import (
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// A storm of connections over the limit costs one log line, and once it is
// over every place is free and no goroutine is left behind.
func TestStorm(t *testing.T) {
	before := runtime.NumGoroutine()
	lim := NewLimits(5, 0, nil)
	s := startTCP(t, Options{Limits: lim, RefuseMessage: bye})
	var kept []net.Conn
	for range 5 {
		dial(t, s, "")
		kept = append(kept, s.accept(t))
	}
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", s.ln.Addr().String(), 5*time.Second)
			if err != nil {
				return // the backlog may overflow; that is a refusal too
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.ReadAll(c)
		})
	}
	wg.Wait()
	if n := strings.Count(s.logs.String(), "connection refused"); n != 1 {
		t.Errorf("%d log lines for a storm, want 1", n)
	}
	for _, c := range kept {
		c.Close()
	}
	if lim.Active() != 0 {
		t.Errorf("Active %d after every connection closed", lim.Active())
	}
	s.ln.Close()
	waitGoroutines(t, before)
}

// Slow or silent PROXY headers from a trusted peer time out without
// holding up a good client, and free their places.
func TestSlowHeaderStorm(t *testing.T) {
	before := runtime.NumGoroutine()
	lim := NewLimits(100, 0, nil)
	s := startTCP(t, Options{ProxyFrom: loopback, HeaderTimeout: 200 * time.Millisecond, Limits: lim})
	var silent []net.Conn
	for range 50 {
		c := dial(t, s, "")
		c.Write([]byte("PROXY TCP4 ")) // then nothing
		silent = append(silent, c)
	}
	dial(t, s, "").Write(v2(src4, dst4, nil))
	if got := RemoteAddr(s.accept(t)); got != src4.Addr() {
		t.Errorf("good client seen as %v", got)
	}
	for _, c := range silent {
		refused(t, c, "")
	}
	waitFor(t, func() bool { return lim.Active() == 1 })
	s.ln.Close()
	waitGoroutines(t, before)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 10s")
}

// waitGoroutines waits until the goroutines started since before have
// ended (a few may belong to the runtime or the test's own cleanup).
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if runtime.NumGoroutine() <= before+2 {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
}
