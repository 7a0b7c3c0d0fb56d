package daemon

import (
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

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/internal/testenv"
)

// startHAProxy runs HAProxy in TCP mode with one frontend on a loopback
// port, forwarding to backend with send-proxy-v2, and returns the frontend
// address.
func startHAProxy(t *testing.T, backend string) string {
	t.Helper()
	haproxy := testenv.Require(t, "haproxy", "haproxy")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("defaults\n\tmode tcp\n\ttimeout connect 5s\n\ttimeout client 30s\n\ttimeout server 30s\n"+
		"frontend imap\n\tbind %s\n\tdefault_backend roost\nbackend roost\n\tserver roost %s send-proxy-v2\n", front, backend)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o600)
	cmd := exec.Command(haproxy, "-db", "-f", path)
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", front, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return front
}

// Behind a load balancer, imapd's auth penalty and logs see the client's
// own address, not the balancer's: issue 10's "rate limits see the real
// client". Real HAProxy, real imapd, go-imap's client.
func TestIMAPBehindHAProxy(t *testing.T) {
	path, _ := writeConfig(t, "", "security:\n  allow_root: true\n  allow_plaintext_auth: true\n"+
		"  proxy_protocol_from: [127.0.0.1]\n")
	var logs syncBuf
	e, err := Open(context.Background(), path, "imapd", &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv, err := imapd.New(imapd.Options{Store: e.Store, Auth: e.Auth, Logger: e.Logger, Metrics: e.Metrics,
		Throttle: e.Penalty, AllowPlaintextAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	lns, err := e.Listen([]string{"127.0.0.1:0"}, false)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lns[0])
	front := startHAProxy(t, lns[0].Addr().String())

	client := netip.MustParseAddr("127.0.0.2")
	login := func(password string) error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 0)), Timeout: 5 * time.Second}
		conn, err := d.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		c := imapclient.New(conn, nil)
		defer c.Close()
		return c.Login("alice", password).Wait()
	}
	// One failure: a 2 s penalty, keyed on the address the client has.
	if err := login("guess"); err == nil {
		t.Fatal("wrong password accepted")
	}
	if d := e.Penalty.Delay(client, ""); d <= 0 {
		t.Errorf("client 127.0.0.2 not penalised (delay %v)", d)
	}
	if d := e.Penalty.Delay(netip.MustParseAddr("127.0.0.1"), ""); d != 0 {
		t.Errorf("HAProxy's own address penalised (%v): every user behind it would wait", d)
	}
	// The right password still works (after the penalty).
	if err := login("wonderland"); err != nil {
		t.Errorf("correct password after failures: %v", err)
	}
	if !strings.Contains(logs.String(), "127.0.0.2") {
		t.Errorf("logs never name the real client:\n%s", logs.String())
	}
}
