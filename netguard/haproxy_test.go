package netguard

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// TestHAProxy puts a real HAProxy in front of a guarded listener, sending
// version 1 (send-proxy) and version 2 (send-proxy-v2, with LOCAL health
// checks) headers: the server must see the client's address, and the
// client's bytes must arrive intact after the header.
func TestHAProxy(t *testing.T) {
	haproxy := testenv.Require(t, "haproxy", "haproxy")
	s := startTCP(t, Options{ProxyFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	backend := s.ln.Addr().String()
	p1, p2 := testenv.FreePort(t), testenv.FreePort(t)
	cfg := fmt.Sprintf(`global
	maxconn 100
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend v1
	bind 127.0.0.1:%d
	default_backend v1
backend v1
	server roost %s send-proxy
frontend v2
	bind 127.0.0.1:%d
	default_backend v2
backend v2
	server roost %s send-proxy-v2 check check-send-proxy inter 100ms
`, p1, backend, p2, backend)
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, haproxy, "-db", "-f", path)
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})

	// Health checks (v2 LOCAL) arrive from HAProxy's own address; client
	// connections carry the client's. Sort them as they come.
	clients := make(chan net.Conn, 4)
	checks := make(chan netip.Addr, 1)
	go func() {
		for c := range s.conns {
			if RemoteAddr(c) == netip.MustParseAddr("127.0.0.1") {
				select {
				case checks <- RemoteAddr(c):
				default:
				}
				c.Close()
				continue
			}
			clients <- c
		}
	}()

	for _, port := range []int{p1, p2} {
		var c net.Conn
		var err error
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: time.Second}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, err = d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("HAProxy not listening on %d: %v\n%s", port, err, out.String())
		}
		defer c.Close()
		fmt.Fprintf(c, "a1 NOOP port %d\r\n", port)
		var sc net.Conn
		select {
		case sc = <-clients:
		case <-time.After(10 * time.Second):
			t.Fatalf("no connection through HAProxy on %d\n%s\n%s", port, out.String(), s.logs)
		}
		defer sc.Close()
		if got := RemoteAddr(sc); got != netip.MustParseAddr("127.0.0.2") {
			t.Errorf("port %d: client %v, want 127.0.0.2", port, got)
		}
		if got, want := sc.LocalAddr().String(), fmt.Sprintf("127.0.0.1:%d", port); got != want {
			t.Errorf("port %d: server address %s, want HAProxy's frontend %s", port, got, want)
		}
		line, err := bufio.NewReader(sc).ReadString('\n')
		if want := fmt.Sprintf("a1 NOOP port %d\r\n", port); line != want || err != nil {
			t.Errorf("port %d: read %q, %v; want %q", port, line, err, want)
		}
	}
	select {
	case a := <-checks:
		t.Logf("health check from %v", a)
	case <-time.After(10 * time.Second):
		t.Errorf("no LOCAL health check admitted\n%s", s.logs)
	}
	if strings.Contains(s.logs.String(), "connection refused") {
		t.Errorf("HAProxy's connections were refused:\n%s", s.logs)
	}
}
