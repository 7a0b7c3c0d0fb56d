package netguard

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuf collects log output from several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a guarded loopback listener whose accepted connections arrive
// on conns.
type server struct {
	ln    net.Listener
	conns chan net.Conn
	logs  *syncBuf
}

func start(t *testing.T, ln net.Listener, o Options) *server {
	t.Helper()
	s := &server{conns: make(chan net.Conn, 16), logs: &syncBuf{}}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(s.logs, nil))
	}
	g := Wrap(ln, o)
	s.ln = g
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				close(s.conns)
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		g.Close()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func startTCP(t *testing.T, o Options) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return start(t, ln, o)
}

// accept returns the next accepted connection; the test's timeout bounds it.
func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	c, ok := <-s.conns
	if !ok {
		t.Fatal("listener closed")
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dial(t *testing.T, s *server, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refused asserts that the server closed c, after sending want (if any).
func refused(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading a refused connection: %v", err)
	}
	if string(got) != want {
		t.Fatalf("refused connection got %q, want %q", got, want)
	}
}

func TestAccept(t *testing.T) {
	s := startTCP(t, Options{})
	c := dial(t, s, "")
	sc := s.accept(t)
	if got, want := sc.RemoteAddr().String(), c.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if got := RemoteAddr(sc); got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("RemoteAddr() = %v", got)
	}
	if !IsLocal(sc) || !IsSecure(sc) {
		t.Error("loopback client to loopback server is not local")
	}
	io.WriteString(c, "a1 NOOP\r\n")
	line, err := bufio.NewReader(sc).ReadString('\n')
	if err != nil || line != "a1 NOOP\r\n" {
		t.Errorf("read %q, %v", line, err)
	}
}

func TestNotLocal(t *testing.T) {
	s := startTCP(t, Options{})
	dial(t, s, "127.0.0.2")
	sc := s.accept(t)
	if IsLocal(sc) || IsSecure(sc) {
		t.Error("client 127.0.0.2 to server 127.0.0.1 counted as local")
	}
}

const bye = "* BYE [UNAVAILABLE] Too many connections\r\n"

func TestMaxConns(t *testing.T) {
	lim := NewLimits(2, 0, nil)
	var refusals atomic.Int32
	s := startTCP(t, Options{Limits: lim, RefuseMessage: bye, OnRefuse: func(string) { refusals.Add(1) }})
	dial(t, s, "")
	first := s.accept(t)
	dial(t, s, "")
	s.accept(t)
	refused(t, dial(t, s, ""), bye)
	if lim.Active() != 2 || refusals.Load() != 1 {
		t.Errorf("Active %d, refusals %d; want 2, 1", lim.Active(), refusals.Load())
	}
	if !strings.Contains(s.logs.String(), "reason=max_connections") {
		t.Errorf("refusal not logged: %s", s.logs)
	}
	first.Close()
	first.Close() // a second Close must not free a second place
	if lim.Active() != 1 {
		t.Fatalf("Active %d after a close, want 1", lim.Active())
	}
	dial(t, s, "")
	s.accept(t)
	refused(t, dial(t, s, ""), bye)
}

func TestMaxConnsPerIP(t *testing.T) {
	lim := NewLimits(0, 1, []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")})
	s := startTCP(t, Options{Limits: lim, RefuseMessage: bye})
	dial(t, s, "127.0.0.1")
	s.accept(t)
	refused(t, dial(t, s, "127.0.0.1"), bye)
	dial(t, s, "127.0.0.2")
	s.accept(t)
	for range 3 {
		dial(t, s, "127.0.0.3") // exempt (trusted network)
		s.accept(t)
	}
	if !strings.Contains(s.logs.String(), "reason=max_ip_connections") || !strings.Contains(s.logs.String(), "remote=127.0.0.1") {
		t.Errorf("refusal not logged with reason and address: %s", s.logs)
	}
}

func TestLimitsSharedByListeners(t *testing.T) {
	lim := NewLimits(1, 0, nil)
	a := startTCP(t, Options{Limits: lim})
	b := startTCP(t, Options{Limits: lim})
	dial(t, a, "")
	a.accept(t)
	refused(t, dial(t, b, ""), "")
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lmtp")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, ln, Options{Limits: NewLimits(0, 1, nil)})
	for range 2 { // no address, so no per-address limit
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc := s.accept(t)
		if !IsLocal(sc) || RemoteAddr(sc).IsValid() {
			t.Errorf("unix socket: IsLocal %v, RemoteAddr %v", IsLocal(sc), RemoteAddr(sc))
		}
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func TestProxyTrusted(t *testing.T) {
	for name, hdr := range map[string][]byte{"v1": v1(src4, dst4), "v2": v2(src4, dst4, nil)} {
		t.Run(name, func(t *testing.T) {
			s := startTCP(t, Options{ProxyFrom: loopback})
			c := dial(t, s, "")
			c.Write(append(hdr, "a1 NOOP\r\n"...))
			sc := s.accept(t)
			if sc.RemoteAddr().String() != src4.String() || sc.LocalAddr().String() != dst4.String() {
				t.Errorf("addresses %s -> %s, want %s -> %s", sc.RemoteAddr(), sc.LocalAddr(), src4, dst4)
			}
			if RemoteAddr(sc) != src4.Addr() || IsLocal(sc) {
				t.Errorf("RemoteAddr %v IsLocal %v", RemoteAddr(sc), IsLocal(sc))
			}
			line, err := bufio.NewReader(sc).ReadString('\n')
			if err != nil || line != "a1 NOOP\r\n" {
				t.Errorf("client's first line %q, %v", line, err)
			}
		})
	}
}

// Webmail behind the load balancer, on the mail host's address, is local.
func TestProxyLocalClient(t *testing.T) {
	s := startTCP(t, Options{ProxyFrom: loopback})
	same := netip.AddrPortFrom(dst6.Addr(), 40000)
	dial(t, s, "").Write(v1(same, dst6))
	if sc := s.accept(t); !IsLocal(sc) {
		t.Errorf("client %s to %s not local", sc.RemoteAddr(), sc.LocalAddr())
	}
}

func TestProxyLocalCommand(t *testing.T) {
	s := startTCP(t, Options{ProxyFrom: loopback})
	c := dial(t, s, "127.0.0.2")
	c.Write(v2Local())
	if got := RemoteAddr(s.accept(t)); got != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("health check from %v, want the proxy's own 127.0.0.2", got)
	}
}

func TestProxyLimitsSeeRealClient(t *testing.T) {
	s := startTCP(t, Options{ProxyFrom: loopback, Limits: NewLimits(0, 1, nil)})
	other := netip.MustParseAddrPort("203.0.113.5:1000")
	dial(t, s, "").Write(v1(src4, dst4))
	s.accept(t)
	dial(t, s, "").Write(v1(other, dst4))
	s.accept(t)
	c := dial(t, s, "")
	c.Write(v1(src4, dst4))
	refused(t, c, "")
	if !strings.Contains(s.logs.String(), "remote="+src4.Addr().String()) {
		t.Errorf("refusal not logged with the real client: %s", s.logs)
	}
}

func TestProxyBadHeader(t *testing.T) {
	s := startTCP(t, Options{ProxyFrom: loopback})
	c := dial(t, s, "")
	io.WriteString(c, "a1 LOGIN alice secret\r\n")
	refused(t, c, "")
	if logs := s.logs.String(); !strings.Contains(logs, "reason=proxy_header") || strings.Contains(logs, "secret") {
		t.Errorf("bad header log: %s", logs)
	}
}

func TestProxyHeaderTimeout(t *testing.T) {
	s := startTCP(t, Options{ProxyFrom: loopback, HeaderTimeout: 50 * time.Millisecond})
	refused(t, dial(t, s, ""), "")
	if !strings.Contains(s.logs.String(), "reason=proxy_header") {
		t.Errorf("timeout not logged: %s", s.logs)
	}
}

// A trusted peer that never sends its header holds up nobody else, and
// Close drops it.
func TestProxySlowHeaderDoesNotBlockAccept(t *testing.T) {
	lim := NewLimits(0, 0, nil)
	s := startTCP(t, Options{ProxyFrom: loopback, HeaderTimeout: time.Hour, Limits: lim})
	stalled := dial(t, s, "")
	stalled.Write([]byte("PROXY TCP4 192.0.2")) // and nothing more
	dial(t, s, "").Write(v1(src4, dst4))
	if got := RemoteAddr(s.accept(t)); got != src4.Addr() {
		t.Errorf("accepted %v", got)
	}
	if lim.Active() != 2 {
		t.Errorf("Active %d, want 2 (a pending header counts)", lim.Active())
	}
	s.ln.Close()
	refused(t, stalled, "")
	if strings.Contains(s.logs.String(), "proxy_header") {
		t.Errorf("closing the listener logged a header refusal: %s", s.logs)
	}
	if lim.Active() != 1 {
		t.Errorf("Active %d after Close, want 1", lim.Active())
	}
}

func TestProxyUntrusted(t *testing.T) {
	for name, from := range map[string][]netip.Prefix{
		"other proxy trusted": {netip.MustParsePrefix("10.0.0.0/8")},
		"none trusted":        nil,
	} {
		t.Run(name, func(t *testing.T) {
			s := startTCP(t, Options{ProxyFrom: from})
			c := dial(t, s, "")
			c.Write(append(v1(src4, dst4), "a1 NOOP\r\n"...))
			sc := s.accept(t)
			if got := RemoteAddr(sc); got != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("untrusted header believed: RemoteAddr %v", got)
			}
			_, err := sc.Read(make([]byte, 512))
			if !errors.Is(err, ErrUntrustedHeader) {
				t.Errorf("Read = %v, want ErrUntrustedHeader", err)
			}
			refused(t, c, "")
			if !strings.Contains(s.logs.String(), "reason=proxy_untrusted") {
				t.Errorf("not logged: %s", s.logs)
			}
		})
	}
}

// Only the first read is inspected: "PROXY TCP4 " later in a session is
// data like any other.
func TestProxyTextLaterIsData(t *testing.T) {
	s := startTCP(t, Options{})
	c := dial(t, s, "")
	sc := s.accept(t)
	r := bufio.NewReader(sc)
	for _, line := range []string{"a1 NOOP\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"} {
		io.WriteString(c, line)
		if got, err := r.ReadString('\n'); got != line || err != nil {
			t.Fatalf("read %q, %v; want %q", got, err, line)
		}
	}
}

func TestRefusalLogRateLimited(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	var refusals atomic.Int32
	s := startTCP(t, Options{Limits: NewLimits(1, 0, nil), Now: clock, RefuseMessage: bye,
		OnRefuse: func(string) { refusals.Add(1) }})
	dial(t, s, "")
	s.accept(t)
	for range 5 {
		refused(t, dial(t, s, ""), bye)
	}
	if n := strings.Count(s.logs.String(), "connection refused"); n != 1 {
		t.Errorf("%d log lines for 5 refusals in one interval, want 1:\n%s", n, s.logs)
	}
	mu.Lock()
	now = now.Add(DefaultLogInterval)
	mu.Unlock()
	refused(t, dial(t, s, ""), bye)
	logs := s.logs.String()
	if n := strings.Count(logs, "connection refused"); n != 2 || !strings.Contains(logs, "suppressed=4") {
		t.Errorf("after the interval: want a second line with suppressed=4:\n%s", logs)
	}
	if refusals.Load() != 6 {
		t.Errorf("OnRefuse called %d times, want 6", refusals.Load())
	}
}

func TestCloseUnblocksAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := Wrap(ln, Options{})
	done := make(chan error)
	go func() {
		_, err := g.Accept()
		done <- err
	}()
	g.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := g.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Accept = %v", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TLS goes outside netguard: the server sees a *tls.Conn whose addresses
// come from the PROXY header.
func TestTLSOutside(t *testing.T) {
	cert := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := Wrap(ln, Options{ProxyFrom: loopback})
	tln := tls.NewListener(g, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer tln.Close()
	go func() {
		c, err := net.Dial("tcp", tln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(v2(src6, dst6, nil))
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		tc.Write([]byte("a1 NOOP\r\n"))
		io.Copy(io.Discard, tc)
	}()
	sc, err := tln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tc, ok := sc.(*tls.Conn)
	if !ok {
		t.Fatalf("accepted a %T, want *tls.Conn", sc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if RemoteAddr(sc) != src6.Addr() || !IsSecure(sc) || IsLocal(sc) {
		t.Errorf("RemoteAddr %v IsSecure %v IsLocal %v", RemoteAddr(sc), IsSecure(sc), IsLocal(sc))
	}
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(2)
	r1, ok1 := l.Acquire("alice\x00192.0.2.1")
	_, ok2 := l.Acquire("alice\x00192.0.2.1")
	_, ok3 := l.Acquire("alice\x00192.0.2.1")
	_, ok4 := l.Acquire("bob\x00192.0.2.1")
	if !ok1 || !ok2 || ok3 || !ok4 {
		t.Fatalf("acquire results %v %v %v %v, want true true false true", ok1, ok2, ok3, ok4)
	}
	r1()
	r1()
	if n := l.Count("alice\x00192.0.2.1"); n != 1 {
		t.Errorf("count %d after one release (called twice), want 1", n)
	}
	if _, ok := l.Acquire("alice\x00192.0.2.1"); !ok {
		t.Error("slot not freed")
	}
	unlimited := NewLimiter(0)
	for range 100 {
		if _, ok := unlimited.Acquire("k"); !ok {
			t.Fatal("unlimited Limiter refused")
		}
	}
}

// BenchmarkAccept compares a connection's accept cost through Wrap (with
// limits) against the bare listener.
func BenchmarkAccept(b *testing.B) {
	for _, guarded := range []bool{false, true} {
		name := "raw"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			var ln net.Listener
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			if guarded {
				ln = Wrap(ln, Options{Limits: NewLimits(1000, 100, nil)})
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			for b.Loop() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c.Read(make([]byte, 1))
				c.Close()
			}
		})
	}
}

// A link-local client's zone is dropped: a zoned address matches no prefix
// (trusted networks, proxy_protocol_from) and would escape the limits.
func TestAddrOfDropsZone(t *testing.T) {
	a := addrOf(&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 143, Zone: "eth0"})
	if a != netip.MustParseAddr("fe80::1") || !netip.MustParsePrefix("fe80::/10").Contains(a) {
		t.Errorf("addrOf = %v", a)
	}
	if a := addrOf(&net.TCPAddr{IP: net.ParseIP("192.0.2.1").To16(), Port: 1}); !a.Is4() {
		t.Errorf("mapped address not unmapped: %v", a)
	}
}
