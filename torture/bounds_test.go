package torture

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// junkResult is what one abusive connection achieved.
type junkResult struct {
	sent   int64  // bytes the server accepted before it stopped reading or closed
	reply  string // what the server said (first 300 bytes)
	closed bool   // the server closed the connection
	stuck  bool   // the server stopped reading but kept the connection
}

// sendJunk connects to addr, sends each setup line (waiting for the reply
// to each after the greeting), then prefix followed by n bytes without a
// newline, while reading whatever the server says.
func sendJunk(t *testing.T, addr string, setup []string, prefix string, n int64) junkResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var res junkResult
	var mu sync.Mutex
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			k, err := c.Read(buf)
			mu.Lock()
			if out.Len() < 300 {
				out.Write(buf[:min(k, 300-out.Len())])
			}
			mu.Unlock()
			if err != nil {
				mu.Lock()
				res.closed = errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")
				mu.Unlock()
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // greeting
	for _, l := range setup {
		c.Write([]byte(l + "\r\n"))
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	out.Reset()
	mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(prefix)); err == nil {
		chunk := bytes.Repeat([]byte("A"), 1<<20)
		for res.sent < n {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			k, err := c.Write(chunk[:min(int64(len(chunk)), n-res.sent)])
			res.sent += int64(k)
			if err != nil {
				var ne net.Error
				res.stuck = errors.As(err, &ne) && ne.Timeout()
				break
			}
		}
	}
	// End the line, so a server still reading gets to answer it.
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte("\r\n"))
	select {
	case <-readDone:
	case <-time.After(10 * time.Second):
		c.Close()
		<-readDone
	}
	mu.Lock()
	defer mu.Unlock()
	res.reply = out.String()
	if res.stuck && res.closed {
		res.stuck = false
	}
	return res
}

// TestResourceBounds sends 100 MB of junk without a newline, and 100 MB
// literals, to imapd and pop3d (and a junk line to lmtpd), and checks that each costs the server a
// bounded amount of memory (peak VmRSS growth under 64 MB, read from
// /proc: a memory bound, not a timing one), gets an error or a
// disconnect, and leaves the server serving.
func TestResourceBounds(t *testing.T) {
	const junk = 100 << 20
	const bound = 64 << 20
	s := newSite(t, "", "")
	imapd, pop3d, lmtpd := s.start("imapd"), s.start("pop3d"), s.start("lmtpd")
	if err := os.MkdirAll(s.maildir("alice"), 0o700); err != nil {
		t.Fatal(err)
	}
	login := []string{"a0 LOGIN alice alicepw"}
	cases := []struct {
		name   string
		d      *daemon
		setup  []string
		prefix string
	}{
		{"imapd: junk before login", imapd, nil, "a1 LOGIN "},
		{"imapd: junk after login", imapd, login, "a1 SELECT "},
		{"imapd: 100 MB synchronizing literal in LOGIN", imapd, nil, "a1 LOGIN {104857600}\r\n"},
		{"imapd: 100 MB non-synchronizing literal in LOGIN", imapd, nil, "a1 LOGIN {104857600+}\r\n"},
		{"imapd: 100 MB APPEND literal (over APPENDLIMIT)", imapd, login, "a1 APPEND INBOX {104857600}\r\n"},
		{"imapd: 100 MB non-synchronizing APPEND literal", imapd, login, "a1 APPEND INBOX {104857600+}\r\n"},
		{"pop3d: junk before login", pop3d, nil, "USER "},
		{"pop3d: junk after login", pop3d, []string{"USER alice", "PASS alicepw"}, "RETR "},
		// Postfix is lmtpd's only client, but a broken one must not hurt.
		{"lmtpd: junk line", lmtpd, []string{"LHLO x"}, "MAIL FROM:<"},
	}
	for _, tc := range cases {
		// "5" resets VmHWM to the current RSS (proc(5)), so the peak is this case's.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", tc.d.pid()), []byte("5"), 0); err != nil {
			t.Fatalf("reset VmHWM: %v", err)
		}
		base := tc.d.procStatus("VmRSS")
		res := sendJunk(t, tc.d.address(), tc.setup, tc.prefix, junk)
		peak := tc.d.procStatus("VmHWM")
		t.Logf("%s: server took %d MB, closed %v, stuck %v, VmRSS %d MB -> peak %d MB; reply %q",
			tc.name, res.sent>>20, res.closed, res.stuck, base>>20, peak>>20, res.reply)
		if peak-base > bound {
			t.Errorf("%s: peak VmRSS grew by %d MB (bound %d MB)", tc.name, (peak-base)>>20, bound>>20)
		}
		answered := strings.Contains(res.reply, " BAD") || strings.Contains(res.reply, " NO") ||
			strings.Contains(res.reply, "BYE") || strings.Contains(res.reply, "-ERR") || strings.HasPrefix(res.reply, "5")
		if !answered && !res.closed {
			t.Errorf("%s: neither an error reply nor a disconnect (reply %q)", tc.name, res.reply)
		}
		if !tc.d.alive() {
			t.Fatalf("%s: %s died", tc.name, tc.d.name)
		}
	}
	if c, err := imapLogin(imapd.address(), "alice", "alicepw"); err != nil {
		t.Errorf("imapd after the abuse: %v", err)
	} else {
		c.Close()
	}
	if p, err := pop3Login(pop3d.address(), "alice", "alicepw"); err != nil {
		t.Errorf("pop3d after the abuse: %v", err)
	} else {
		p.Close()
	}
}
