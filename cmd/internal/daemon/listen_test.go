package daemon

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roost-mail/roost/cmd/internal/config"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/netguard"
)

// acceptAll accepts on ln until it is closed, sending connections to a
// channel.
func acceptAll(t *testing.T, ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 16)
	go func() {
		defer close(ch)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestListenLimitsProxyAndMetrics(t *testing.T) {
	e, logs := testEnv(t, "imapd", func(c *config.Config) {
		c.Security.MaxIPConnections = 1
		c.Security.ProxyProtocolFrom = []string{"127.0.0.1"}
		c.Security.TrustedNetworks = []string{"192.0.2.0/24"}
	})
	// Two listeners (like 143 and a second address) share the limits.
	lns, err := e.Listen([]string{"127.0.0.1:0", "127.0.0.1:0"}, false)
	if err != nil {
		t.Fatal(err)
	}
	a, b := acceptAll(t, lns[0]), acceptAll(t, lns[1])

	// The load balancer passes on clients: limits see the real address.
	dialTCP(t, lns[0].Addr().String()).Write([]byte("PROXY TCP4 203.0.113.9 127.0.0.1 4000 143\r\n"))
	if c := <-a; netguard.RemoteAddr(c).String() != "203.0.113.9" {
		t.Fatalf("client %v", netguard.RemoteAddr(c))
	}
	second := dialTCP(t, lns[1].Addr().String())
	second.Write([]byte("PROXY TCP4 203.0.113.9 127.0.0.1 4001 143\r\n"))
	if got := readAll(t, second); got != refuseMessages["imapd"] {
		t.Errorf("refused client got %q", got)
	}
	// A trusted network (webmail) is not limited per address.
	for port := range 3 {
		dialTCP(t, lns[1].Addr().String()).Write(fmt.Appendf(nil, "PROXY TCP4 192.0.2.80 127.0.0.1 %d 143\r\n", 5000+port))
		<-b
	}
	// A direct client from the proxy's address without a header is refused.
	io.WriteString(dialTCP(t, lns[0].Addr().String()), "a1 CAPABILITY\r\n")
	// The refusal happens in the listener's goroutine; wait for it.
	waitFor(t, func() bool { return testutil.ToFloat64(e.refused.WithLabelValues(netguard.ReasonBadHeader)) == 1 })
	if got := testutil.ToFloat64(e.refused.WithLabelValues(netguard.ReasonMaxIPConns)); got != 1 {
		t.Errorf("roost_connections_refused_total{reason=max_ip_connections} = %v, want 1", got)
	}
	for _, want := range []string{"reason=max_ip_connections", "remote=203.0.113.9", "daemon=imapd", "reason=proxy_header"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// waitFor polls cond for up to 10 s; it is for effects that happen in
// another goroutine, never for timing.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 10s")
}

func TestListenGlobalLimitPerProtocol(t *testing.T) {
	for name, want := range refuseMessages {
		t.Run(name, func(t *testing.T) {
			e, _ := testEnv(t, name, func(c *config.Config) { c.Security.MaxConnections = 1 })
			lns, err := e.Listen([]string{"127.0.0.1:0"}, false)
			if err != nil {
				t.Fatal(err)
			}
			ch := acceptAll(t, lns[0])
			dialTCP(t, lns[0].Addr().String())
			<-ch
			if got := readAll(t, dialTCP(t, lns[0].Addr().String())); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestListenImplicitTLSNeedsCert(t *testing.T) {
	e, _ := testEnv(t, "imapd", nil)
	if _, err := e.Listen([]string{"127.0.0.1:0"}, true); err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Errorf("implicit TLS without a certificate: %v", err)
	}
}

func TestListenBadAddressClosesOthers(t *testing.T) {
	e, _ := testEnv(t, "imapd", nil)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	sock := filepath.Join(t.TempDir(), "s")
	_, err = e.Listen([]string{"unix:" + sock, held.Addr().String()}, false)
	if err == nil || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Fatalf("port in use: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the first listener's socket was left behind: %v", err)
	}
}

func TestListenUnix(t *testing.T) {
	e, _ := testEnv(t, "lmtpd", nil)
	dir := t.TempDir()
	sock := filepath.Join(dir, "roost-lmtp")

	// A socket left by a dead daemon is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	lns, err := e.Listen([]string{"unix:" + sock}, false)
	if err != nil {
		t.Fatal(err)
	}
	ch := acceptAll(t, lns[0])
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %v, want %v", fi.Mode().Perm(), os.FileMode(SocketMode))
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sc := <-ch; !netguard.IsLocal(sc) {
		t.Error("unix client not local")
	}

	// A live socket is not taken over.
	if _, err := e.Listen([]string{"unix:" + sock}, false); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second daemon on a live socket: %v", err)
	}
	// Nor is a file that is not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := e.Listen([]string{"unix:" + file}, false); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("regular file was touched")
	}
	// Closing removes the socket.
	lns[0].Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}

// As root, the socket goes to the owner of its directory (Postfix's
// private/ belongs to postfix), as Dovecot's unix_listener user= does.
func TestListenUnixOwnerAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the socket away")
	}
	e, _ := testEnv(t, "lmtpd", nil)
	dir := filepath.Join(t.TempDir(), "private")
	os.Mkdir(dir, 0o700)
	if err := os.Chown(dir, 65534, 65533); err != nil {
		t.Fatal(err)
	}
	lns, err := e.Listen([]string{"unix:" + dir + "/roost-lmtp"}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].Close()
	fi, err := os.Stat(dir + "/roost-lmtp")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65533 {
		t.Errorf("socket owned by %d:%d, want 65534:65533", st.Uid, st.Gid)
	}
}

func TestListenRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the check applies to root only")
	}
	for _, tc := range []struct {
		layout    string
		allowRoot bool
		ok        bool
	}{
		{"virtual", false, false},
		{"virtual", true, true},
		{"system", false, true},
	} {
		e, _ := testEnv(t, "imapd", func(c *config.Config) {
			c.Mail.Layout, c.Security.AllowRoot = tc.layout, tc.allowRoot
		})
		lns, err := e.Listen([]string{"127.0.0.1:0"}, false)
		if (err == nil) != tc.ok {
			t.Errorf("layout %s allow_root %v: %v", tc.layout, tc.allowRoot, err)
		}
		if err != nil && !strings.Contains(err.Error(), "User=vmail") {
			t.Errorf("the refusal does not say what to do: %v", err)
		}
		for _, l := range lns {
			l.Close()
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"192.0.2.7", "10.1.2.3/8", "2001:db8::1", "2001:db8::/32", "::ffff:198.51.100.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	want := "[192.0.2.7/32 10.0.0.0/8 2001:db8::1/128 2001:db8::/32 198.51.100.0/24]"
	if fmt.Sprint(got) != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := ParsePrefixes([]string{"campus"}); err == nil {
		t.Error("accepted a name")
	}
}

// FuzzParsePrefixes checks that whatever the security.* lists hold, the
// result is masked, unmapped, and contains the address it was written with.
func FuzzParsePrefixes(f *testing.F) {
	f.Add("192.0.2.7")
	f.Add("::ffff:10.0.0.0/104")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePrefixes([]string{s})
		if err != nil {
			return
		}
		if len(got) != 1 {
			t.Fatalf("%q: %d prefixes", s, len(got))
		}
		p := got[0]
		if p != p.Masked() || p.Addr().Is4In6() || !p.IsValid() {
			t.Fatalf("%q: prefix %v not masked, unmapped and valid", s, p)
		}
		addr := strings.TrimSpace(s)
		if i := strings.IndexByte(addr, '/'); i >= 0 {
			addr = addr[:i]
		}
		if a, err := netip.ParseAddr(addr); err == nil && !p.Contains(a.Unmap()) {
			t.Fatalf("%q: %v does not contain %v", s, p, a)
		}
	})
}

// ListenTLSRaw hands over connections before TLS (the server does the
// handshake) and refuses without a plaintext message.
func TestListenTLSRaw(t *testing.T) {
	certFile, keyFile := writeCert(t, t.TempDir(), "raw.example.edu")
	e, _ := testEnv(t, "imapd", func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
		c.Security.MaxConnections = 1
	})
	lns, err := e.ListenTLSRaw([]string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ch := acceptAll(t, lns[0])
	go func() {
		c := <-ch
		defer c.Close()
		if _, isTLS := c.(*tls.Conn); isTLS {
			return // the handshake below then fails
		}
		tc := tls.Server(c, e.TLS.Config())
		tc.Handshake()
		io.Copy(io.Discard, tc)
	}()
	addr := lns[0].Addr().String()
	if cn, err := handshake(t, addr, nil); err != nil || cn != "raw.example.edu" {
		t.Fatalf("handshake through the server's own TLS: %q, %v", cn, err)
	}
	// Once that connection is gone, hold the one place and be refused.
	waitFor(t, func() bool { return e.limits().Active() == 0 })
	dialTCP(t, addr)
	waitFor(t, func() bool { return e.limits().Active() == 1 })
	if got := readAll(t, dialTCP(t, addr)); got != "" {
		t.Errorf("refused TLS client got plaintext %q", got)
	}

	e2, _ := testEnv(t, "imapd", nil)
	if _, err := e2.ListenTLSRaw([]string{"127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Errorf("no certificate: %v", err)
	}
}

// Real clients read the refusal as their protocol's "try later": Python's
// imaplib, poplib and smtplib (LMTP) against a daemon at its limit.
func TestRefusalSeenByRealClients(t *testing.T) {
	python := testenv.Require(t, "python3", "python3")
	for name, script := range map[string]string{
		"imapd": `import imaplib, sys
try:
    imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
except imaplib.IMAP4.error as e:
    print("refused:", e)`,
		"pop3d": `import poplib, sys
try:
    poplib.POP3(sys.argv[1], int(sys.argv[2]))
except poplib.error_proto as e:
    print("refused:", e)`,
		"lmtpd": `import smtplib, sys
try:
    smtplib.LMTP(sys.argv[1], int(sys.argv[2]))
except smtplib.SMTPConnectError as e:
    print("refused:", e.smtp_code, e.smtp_error.decode())`,
	} {
		t.Run(name, func(t *testing.T) {
			e, _ := testEnv(t, name, func(c *config.Config) { c.Security.MaxConnections = 1 })
			lns, err := e.Listen([]string{"127.0.0.1:0"}, false)
			if err != nil {
				t.Fatal(err)
			}
			ch := acceptAll(t, lns[0])
			dialTCP(t, lns[0].Addr().String())
			<-ch
			host, port, _ := net.SplitHostPort(lns[0].Addr().String())
			out, err := exec.Command(python, "-c", script, host, port).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "refused:") || !strings.Contains(string(out), "Too many connections") {
				t.Errorf("%s client: %v\n%s", name, err, out)
			}
			t.Logf("%s", out)
		})
	}
}
