package imapd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/imapd"
)

func selfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

func TestLoginResultsAndLogs(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.raw(t)
	if l := last(r.cmd("LOGIN alice wrong-password")); !strings.HasPrefix(l, "t1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("bad password: %s", l)
	}
	if l := last(r.cmd("LOGIN alice " + alicePass)); !strings.HasPrefix(l, "t2 OK [CAPABILITY IMAP4rev2 IMAP4rev1") {
		t.Fatalf("good password: %s", l)
	}
	r.cmd("LOGOUT")
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), "msg=logout") })
	logs := ts.logs.String()
	for _, want := range []string{"user=alice tls=false result=fail", "user=alice tls=false result=ok", "msg=logout", "bytes_in=", "bytes_out="} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, alicePass) || strings.Contains(logs, "wrong-password") {
		t.Errorf("log contains a password:\n%s", logs)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 2s")
}

func TestPlaintextAuthNeedsTLS(t *testing.T) {
	cfg := selfSigned(t)
	ts := newTestServer(t, func(o *imapd.Options) {
		o.AllowPlaintextAuth = false
		o.IsSecure = func(net.Conn) bool { return false }
		o.TLSConfig = cfg
	})
	r := ts.raw(t)
	caps := r.cmd("CAPABILITY")[0]
	if !strings.Contains(caps, "LOGINDISABLED") || !strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities without TLS: %s", caps)
	}
	if l := last(r.cmd("LOGIN alice " + alicePass)); !strings.Contains(l, "NO [PRIVACYREQUIRED]") {
		t.Fatalf("LOGIN without TLS: %s", l)
	}
	c, err := imapclient.DialStartTLS(ts.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", alicePass).Wait(); err != nil {
		t.Fatalf("login after STARTTLS: %v", err)
	}
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), "tls=true result=ok") })
}

func TestSameAddressCountsAsSecure(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) { o.AllowPlaintextAuth = false })
	r := ts.raw(t) // 127.0.0.1 to 127.0.0.1, like webmail on the same host
	if caps := r.cmd("CAPABILITY")[0]; strings.Contains(caps, "LOGINDISABLED") {
		t.Fatalf("local connection refused plaintext auth: %s", caps)
	}
	r.login("alice", alicePass)
}

func TestImplicitTLS(t *testing.T) {
	cfg := selfSigned(t)
	ts := newTestServer(t, func(o *imapd.Options) {
		o.AllowPlaintextAuth = false
		o.IsSecure = func(net.Conn) bool { return false }
		o.TLSConfig = cfg
	})
	ts.tlsInbox(t)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestAuthenticateMechanisms(t *testing.T) {
	ts := newTestServer(t, nil)
	t.Run("PLAIN with initial response", func(t *testing.T) {
		r := ts.raw(t)
		if l := last(r.cmd("AUTHENTICATE PLAIN " + b64("\x00alice\x00"+alicePass))); !strings.Contains(l, "OK") {
			t.Fatal(l)
		}
	})
	t.Run("PLAIN as another user is refused", func(t *testing.T) {
		r := ts.raw(t)
		if l := last(r.cmd("AUTHENTICATE PLAIN " + b64("bob\x00alice\x00"+alicePass))); !strings.Contains(l, "NO [AUTHORIZATIONFAILED]") {
			t.Fatal(l)
		}
	})
	t.Run("LOGIN step by step", func(t *testing.T) {
		r := ts.raw(t)
		r.send("a AUTHENTICATE LOGIN\r\n")
		if l := r.line(); l != "+ "+b64("Username:") {
			t.Fatalf("first challenge %q", l)
		}
		r.send(b64("alice") + "\r\n")
		if l := r.line(); l != "+ "+b64("Password:") {
			t.Fatalf("second challenge %q", l)
		}
		r.send(b64(alicePass) + "\r\n")
		if l := r.line(); !strings.HasPrefix(l, "a OK") {
			t.Fatal(l)
		}
	})
	t.Run("LOGIN with user name as initial response, wrong password", func(t *testing.T) {
		r := ts.raw(t)
		r.send("a AUTHENTICATE LOGIN " + b64("alice") + "\r\n")
		if l := r.line(); l != "+ "+b64("Password:") {
			t.Fatalf("challenge %q", l)
		}
		r.send(b64("nope") + "\r\n")
		if l := r.line(); !strings.HasPrefix(l, "a NO [AUTHENTICATIONFAILED]") {
			t.Fatal(l)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		r := ts.raw(t)
		r.send("a AUTHENTICATE LOGIN\r\n")
		r.line()
		r.send("*\r\n")
		if l := r.line(); !strings.HasPrefix(l, "a BAD") {
			t.Fatal(l)
		}
	})
	t.Run("capabilities", func(t *testing.T) {
		r := ts.raw(t)
		caps := r.cmd("CAPABILITY")[0]
		if !strings.Contains(caps, "AUTH=PLAIN AUTH=LOGIN") {
			t.Fatal(caps)
		}
	})
}

func TestMaxUserIPConnections(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) { o.MaxUserIPConnections = 1 })
	first := ts.raw(t)
	first.login("alice", alicePass)
	second := ts.raw(t)
	if l := last(second.cmd("LOGIN alice " + alicePass)); !strings.Contains(l, "NO [LIMIT]") {
		t.Fatalf("second session: %s", l)
	}
	second.login("bob", bobPass) // another user is not limited
	first.cmd("LOGOUT")
	third := ts.raw(t)
	waitFor(t, func() bool {
		return strings.Contains(last(third.cmd("LOGIN alice "+alicePass)), "OK")
	})
}

type recordingThrottle struct {
	mu      sync.Mutex
	calls   []string
	waitErr error
}

func (r *recordingThrottle) record(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recordingThrottle) Wait(ctx context.Context, remote netip.Addr, user string) error {
	r.record("wait " + remote.String() + " " + user)
	return r.waitErr
}
func (r *recordingThrottle) Fail(remote netip.Addr, user string) { r.record("fail " + user) }
func (r *recordingThrottle) Succeed(remote netip.Addr, user string) {
	r.record("ok " + user)
}

func TestThrottle(t *testing.T) {
	th := &recordingThrottle{}
	ts := newTestServer(t, func(o *imapd.Options) { o.Throttle = th })
	r := ts.raw(t)
	r.cmd("LOGIN Alice bad")
	r.login("alice", alicePass)
	th.mu.Lock()
	got := strings.Join(th.calls, "; ")
	th.mu.Unlock()
	if want := "wait 127.0.0.1 alice; fail alice; wait 127.0.0.1 alice; ok alice"; got != want {
		t.Fatalf("throttle calls: %s, want %s", got, want)
	}
	th.waitErr = errors.New("penalty box")
	r2 := ts.raw(t)
	if l := last(r2.cmd("LOGIN alice " + alicePass)); !strings.Contains(l, "NO [UNAVAILABLE]") {
		t.Fatal(l)
	}
}

func TestShutdownSaysBye(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.login(t, "alice")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	_ = idle
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	select {
	case <-c.Closed():
	case <-time.After(3 * time.Second):
		t.Fatal("client not disconnected")
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Fatal("server still accepts connections")
	}
}

func TestMalformedInput(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: one\n\nbody\n")
	t.Run("unknown command before login ends the connection", func(t *testing.T) {
		r := ts.raw(t)
		r.send("a FOO\r\n")
		if l := r.line(); !strings.HasPrefix(l, "a BAD") && !strings.HasPrefix(l, "* BYE") {
			t.Fatal(l)
		}
	})
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"XYZZY", "BAD"},
		{"FETCH 0:x FLAGS", "t"}, // go-imap answers NO [SERVERBUG] for a malformed set; the session goes on
		{"FETCH 1:* (FLAGS", "BAD"},
		{"FETCH 5 FLAGS", "BAD"},
		{"UID FETCH 5 FLAGS", "OK"},
		{"STORE 1 +FLAGS (\\Seen", "BAD"},
		{"SEARCH FROMM x", "t"}, // as above
		{"SELECT", "BAD"},
		{"CREATE \"a//b\"", "NO"},
		{"COPY 1 NoSuchFolder", "NO [TRYCREATE]"},
		{"LOGIN alice x", "BAD"},
	} {
		if l := last(r.cmd(tc.cmd)); !strings.Contains(l, tc.want) {
			t.Errorf("%s: got %q, want %s", tc.cmd, l, tc.want)
		}
	}
	// A huge literal is refused before the client sends it.
	r.send("big APPEND INBOX {999999999}\r\n")
	if l := r.line(); !strings.HasPrefix(l, "big NO [TOOBIG]") {
		t.Fatalf("huge literal: %s", l)
	}
	// The connection is still usable.
	if l := last(r.cmd("NOOP")); !strings.Contains(l, "OK") {
		t.Fatal(l)
	}
	// An overlong command line ends in an error, not in memory growth.
	r.send("long " + strings.Repeat("X", 100<<10) + "\r\n")
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, _ := r.br.ReadString('\n'); strings.Contains(l, "OK") {
		t.Fatalf("overlong line accepted: %q", l)
	}
}

var _ = imap.CapIMAP4rev2
