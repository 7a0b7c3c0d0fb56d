package ldapauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/internal/testenv"
)

var allAttrs = Attributes{User: "uid", Home: "homeDirectory", Maildir: "mailMessageStore",
	Quota: "mailQuota", UIDNumber: "uidNumber", GIDNumber: "gidNumber"}

func bindModeOpts(s *slapd) Options {
	return Options{URLs: []string{s.URL}, UserDNTemplate: "uid=%u,ou=people," + suffix,
		Attributes: allAttrs, Timeout: 2 * time.Second}
}

func searchModeOpts(s *slapd) Options {
	return Options{URLs: []string{s.URL}, BindDN: serviceDN, BindPassword: servicePW,
		BaseDN: "ou=people," + suffix, Attributes: allAttrs, Timeout: 2 * time.Second}
}

func newAuth(t *testing.T, o Options) *Authenticator {
	t.Helper()
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

var (
	aliceID = auth.Identity{User: "alice", Home: "/home/alice", QuotaBytes: 250 << 20, QuotaMessages: -1, UID: 1001, GID: 100, Backend: "ldap"}
	bobID   = auth.Identity{User: "bob", Maildir: "/srv/mail/bob", QuotaBytes: 1048576, QuotaMessages: -1, UID: -1, GID: -1, Backend: "ldap"}
)

func wantInvalid(t *testing.T, a auth.Authenticator, user, pw string) {
	t.Helper()
	id, err := a.Authenticate(context.Background(), user, pw)
	if !errors.Is(err, auth.ErrInvalidCredentials) || errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("Authenticate(%q, %q) = %+v, %v; want ErrInvalidCredentials", user, pw, id, err)
	}
}

func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrInvalidCredentials) || errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("error = %v; want ErrUnavailable only", err)
	}
}

func wantIdentity(t *testing.T, a auth.Authenticator, user, pw string, want auth.Identity) {
	t.Helper()
	id, err := a.Authenticate(context.Background(), user, pw)
	if err != nil || *id != want {
		t.Errorf("Authenticate(%q) = %+v, %v; want %+v", user, id, err, want)
	}
}

func TestBindMode(t *testing.T) {
	s := startSlapd(t)
	a := newAuth(t, bindModeOpts(s))
	wantIdentity(t, a, "alice", "alice-pw", aliceID)
	wantIdentity(t, a, " Alice ", "alice-pw", aliceID)
	wantIdentity(t, a, "bob", "bob-pw", bobID) // {SSHA} userPassword, checked by slapd
	wantInvalid(t, a, "alice", "wrong")
	wantInvalid(t, a, "alice", "")
	wantInvalid(t, a, "nobody", "alice-pw")
	// DN injection: the value is escaped, so this names no entry.
	wantInvalid(t, a, "alice,ou=people", "alice-pw")
	wantInvalid(t, a, "bob,uid=alice", "alice-pw")
	wantInvalid(t, a, "alice\x00", "alice-pw")
	// Lookup without a service account reads anonymously, which these
	// ACLs forbid: the user is invisible.
	if _, err := a.Lookup(context.Background(), "alice"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("anonymous Lookup = %v", err)
	}
	// dave may bind but not read his entry: with no service account the
	// attributes are unknown, which is a failure to check, not a wrong
	// password; with one, they are read as the service.
	_, err := a.Authenticate(context.Background(), "dave", "dave-pw")
	wantUnavailable(t, err)
	wantInvalid(t, a, "dave", "wrong")
	o := bindModeOpts(s)
	o.BindDN, o.BindPassword = serviceDN, servicePW
	a2 := newAuth(t, o)
	daveID := auth.Identity{User: "dave", Maildir: "/srv/mail/dave", QuotaBytes: -1, QuotaMessages: -1, UID: -1, GID: -1, Backend: "ldap"}
	wantIdentity(t, a2, "dave", "dave-pw", daveID)
	if id, err := a2.Lookup(context.Background(), "ALICE"); err != nil || *id != aliceID {
		t.Errorf("Lookup = %+v, %v", id, err)
	}
	if _, err := a2.Lookup(context.Background(), "nobody"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("Lookup(nobody) = %v", err)
	}
}

func TestSearchMode(t *testing.T) {
	s := startSlapd(t)
	a := newAuth(t, searchModeOpts(s))
	ctx := context.Background()
	wantIdentity(t, a, "alice", "alice-pw", aliceID)
	wantIdentity(t, a, "bob", "bob-pw", bobID)
	wantInvalid(t, a, "alice", "bob-pw")
	wantInvalid(t, a, "nobody", "x")
	// Filter injection: each of these would match alice (or everyone)
	// if the value reached the filter unescaped.
	for _, login := range []string{"*", "al*", ")(uid=*", "alice)(|(uid=*", "*)(objectClass=*", "alice\x00", "alice\\2a"} {
		wantInvalid(t, a, login, "alice-pw")
		if login == "*" {
			continue // a real uid, checked below
		}
		if _, err := a.Lookup(ctx, login); !errors.Is(err, auth.ErrNoSuchUser) {
			t.Errorf("Lookup(%q) = %v; want ErrNoSuchUser", login, err)
		}
	}
	// "*" is a real uid: escaping finds exactly that entry.
	star := auth.Identity{User: "*", QuotaBytes: -1, QuotaMessages: -1, UID: -1, GID: -1, Backend: "ldap"}
	wantIdentity(t, a, "*", "star-pw", star)
	if id, err := a.Lookup(ctx, "*"); err != nil || *id != star {
		t.Errorf("Lookup(*) = %+v, %v", id, err)
	}
	if id, err := a.Lookup(ctx, "bob"); err != nil || *id != bobID {
		t.Errorf("Lookup(bob) = %+v, %v", id, err)
	}
	// Bad attribute values are ignored (defaults apply), not fatal.
	wantIdentity(t, a, "carol", "carol-pw", auth.Identity{User: "carol", Home: "/home/carol", QuotaBytes: -1, QuotaMessages: -1, UID: 1003, GID: 100, Backend: "ldap"})
	wantIdentity(t, a, "dave", "dave-pw", auth.Identity{User: "dave", Maildir: "/srv/mail/dave", QuotaBytes: -1, QuotaMessages: -1, UID: -1, GID: -1, Backend: "ldap"})
	users, err := a.ListUsers(ctx)
	if err != nil || strings.Join(users, " ") != "* alice bob carol dave twin1 twin2" {
		t.Errorf("ListUsers = %q, %v", users, err)
	}
}

func TestSearchByMail(t *testing.T) {
	s := startSlapd(t)
	o := searchModeOpts(s)
	o.UserFilter = "(&(objectClass=inetOrgPerson)(mail=%n@%d))"
	a := newAuth(t, o)
	// The canonical name comes from the uid attribute, not the login.
	wantIdentity(t, a, "Alice@Example.EDU", "alice-pw", aliceID)
	// Two entries match: refuse rather than guess.
	wantInvalid(t, a, "twins@example.edu", "twin-pw")
	wantInvalid(t, a, "*@example.edu", "alice-pw")
}

func TestWrongServicePassword(t *testing.T) {
	s := startSlapd(t)
	o := searchModeOpts(s)
	o.BindPassword = "not-the-service-password"
	var logs bytes.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	a := newAuth(t, o)
	_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
	wantUnavailable(t, err)
	_, err = a.Lookup(context.Background(), "alice")
	wantUnavailable(t, err)
	if strings.Contains(logs.String(), "not-the-service-password") || strings.Contains(logs.String(), "alice-pw") {
		t.Errorf("a password was logged:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "bind_password_file") {
		t.Errorf("log does not tell the admin what to check:\n%s", logs.String())
	}
}

func TestServerStopAndRestart(t *testing.T) {
	s := startSlapd(t)
	for name, o := range map[string]Options{"bind": bindModeOpts(s), "search": searchModeOpts(s)} {
		t.Run(name, func(t *testing.T) {
			o.BindDN, o.BindPassword = serviceDN, servicePW
			a := newAuth(t, o)
			ctx := context.Background()
			wantIdentity(t, a, "alice", "alice-pw", aliceID) // pools now hold live connections
			s.Stop()
			for range 2 {
				_, err := a.Authenticate(ctx, "alice", "alice-pw")
				wantUnavailable(t, err)
				_, err = a.Authenticate(ctx, "alice", "wrong")
				wantUnavailable(t, err) // "could not check", never "wrong password"
				_, err = a.Lookup(ctx, "alice")
				wantUnavailable(t, err)
			}
			s.Start()
			wantIdentity(t, a, "alice", "alice-pw", aliceID)
			wantInvalid(t, a, "alice", "wrong")
			// A restart while connections sit idle in the pools: the
			// stale ones are noticed and replaced within one call.
			s.Restart()
			wantIdentity(t, a, "alice", "alice-pw", aliceID)
			if _, err := a.Lookup(ctx, "bob"); err != nil {
				t.Errorf("Lookup after restart: %v", err)
			}
		})
	}
}

func TestFailover(t *testing.T) {
	s := startSlapd(t)
	o := searchModeOpts(s)
	o.URLs = []string{fmt.Sprintf("ldap://127.0.0.1:%d", testenv.FreePort(t)), s.URL}
	a := newAuth(t, o)
	wantIdentity(t, a, "alice", "alice-pw", aliceID)
	if a.preferred.Load() != 1 {
		t.Error("the answering server is not remembered")
	}
}

// newHungServer listens on loopback, accepts connections and never answers
// on them, until the test ends; it returns the address.
func newHungServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	conns.Go(func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	t.Cleanup(func() {
		l.Close()
		conns.Wait()
	})
	return l.Addr().String()
}

// TestSlowServer: a server that accepts and never answers is a temporary
// failure within the timeout.
func TestSlowServer(t *testing.T) {
	addr := newHungServer(t)
	for _, o := range []Options{
		{URLs: []string{"ldap://" + addr}, UserDNTemplate: "uid=%u,ou=people," + suffix, Timeout: 300 * time.Millisecond},
		{URLs: []string{"ldap://" + addr}, BaseDN: suffix, BindDN: serviceDN, BindPassword: "x", Timeout: 300 * time.Millisecond},
	} {
		a := newAuth(t, o)
		start := time.Now()
		_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
		wantUnavailable(t, err)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v with a 300ms timeout", d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err = a.Lookup(ctx, "alice")
		cancel()
		wantUnavailable(t, err)
	}
}

// TestFailoverFromHungServer: when the first URL accepts connections and
// never answers (so dialling it succeeds), a login fails with a temporary
// error after the timeout and the next ones go to the second URL, in both
// modes.
func TestFailoverFromHungServer(t *testing.T) {
	s := startSlapd(t)
	hung := "ldap://" + newHungServer(t)
	for name, o := range map[string]Options{"bind": bindModeOpts(s), "search": searchModeOpts(s)} {
		t.Run(name, func(t *testing.T) {
			o.URLs, o.Timeout = []string{hung, s.URL}, 300*time.Millisecond
			a := newAuth(t, o)
			_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
			wantUnavailable(t, err)
			wantIdentity(t, a, "alice", "alice-pw", aliceID)
			wantInvalid(t, a, "nobody", "pw")
			if a.preferred.Load() != 1 {
				t.Errorf("preferred URL %d; want 1, the server that answers", a.preferred.Load())
			}
		})
	}
}

func TestTLS(t *testing.T) {
	s := startSlapd(t)
	for _, c := range []struct {
		name     string
		url      string
		startTLS bool
		ca       string
		ok       bool
	}{
		{"starttls", s.URL, true, s.caFile, true},
		{"starttls-untrusted", s.URL, true, s.otherCA, false},
		{"ldaps", s.LDAPSURL, false, s.caFile, true},
		{"ldaps-untrusted", s.LDAPSURL, false, s.otherCA, false},
		{"ldaps-starttls-ignored", s.LDAPSURL, true, s.caFile, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := searchModeOpts(s)
			o.URLs, o.StartTLS, o.CAFile = []string{c.url}, c.startTLS, c.ca
			a := newAuth(t, o)
			if c.ok {
				wantIdentity(t, a, "alice", "alice-pw", aliceID)
				return
			}
			_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
			wantUnavailable(t, err)
		})
	}
}

func TestCacheOverLDAP(t *testing.T) {
	s := startSlapd(t)
	const ttl = 500 * time.Millisecond
	c := auth.NewCache(newAuth(t, searchModeOpts(s)), ttl, ttl)
	ctx := context.Background()
	cached := time.Now() // entries expire ttl after the backend was asked
	wantIdentity(t, c, "alice", "alice-pw", aliceID)
	if _, err := c.Lookup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := c.Authenticate(ctx, "alice", "alice-pw"); err != nil && time.Since(cached) < ttl/2 {
		t.Errorf("cached login while LDAP is down: %v", err)
	}
	time.Sleep(ttl)
	_, err := c.Authenticate(ctx, "alice", "alice-pw")
	wantUnavailable(t, err) // expired: never served stale
	if id, err := c.Lookup(ctx, "bob"); err != nil || *id != bobID {
		t.Errorf("stale Lookup while LDAP is down = %+v, %v", id, err)
	}
	_, err = c.Lookup(ctx, "alice") // cached by the login above
	if err != nil {
		t.Errorf("Lookup of a user seen at login: %v", err)
	}
	s.Start()
	wantIdentity(t, c, "alice", "alice-pw", aliceID)
}

func TestConcurrentLogins(t *testing.T) {
	s := startSlapd(t)
	o := searchModeOpts(s)
	o.PoolSize = 2
	a := newAuth(t, o)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				user, pw := "alice", "alice-pw"
				if (i+j)%2 == 1 {
					user, pw = "bob", "bob-pw"
				}
				if _, err := a.Authenticate(context.Background(), user, pw); err != nil {
					t.Errorf("%s: %v", user, err)
				}
			}
		})
	}
	wg.Wait()
}

func TestCleartextWarning(t *testing.T) {
	for _, c := range []struct {
		url      string
		startTLS bool
		warn     bool
	}{
		{"ldap://ldap.example.edu", false, true},
		{"ldap://ldap.example.edu", true, false},
		{"ldaps://ldap.example.edu", false, false},
		{"ldap://127.0.0.1:389", false, false},
		{"ldap://[::1]", false, false},
		{"ldap://localhost", false, false},
	} {
		var logs bytes.Buffer
		_, err := New(Options{URLs: []string{c.url}, StartTLS: c.startTLS, BaseDN: suffix, BindDN: serviceDN,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), "clear text"); got != c.warn {
			t.Errorf("%s start_tls=%v: warning %v, want %v", c.url, c.startTLS, got, c.warn)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, o := range []Options{
		{},
		{URLs: []string{"ldap://x"}},
		{URLs: []string{"http://x"}, BaseDN: suffix},
		{URLs: []string{"ldap://"}, BaseDN: suffix},
		{URLs: []string{"ldap://x"}, BaseDN: suffix, UserFilter: "(uid=%u"},
		{URLs: []string{"ldap://x"}, BaseDN: suffix, CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// blackholeProxy forwards TCP to a server. blackhole makes the connections
// open so far go silent without closing them, as when a firewall forgets
// an idle connection; new connections work. hang makes the server look
// hung: open connections go silent and new ones are accepted and never
// answered, until resume.
type blackholeProxy struct {
	l       net.Listener
	mu      sync.Mutex
	servers []net.Conn
	hung    bool
	held    []net.Conn // accepted while hung
	wg      sync.WaitGroup
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{l: l}
	var clients []net.Conn
	p.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			hung := p.hung
			if hung {
				p.held = append(p.held, c)
			}
			p.mu.Unlock()
			if hung {
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.servers = append(p.servers, s)
			clients = append(clients, c)
			p.mu.Unlock()
			// On a blackholed pair the copies stop; the client side stays
			// open until the test ends.
			p.wg.Go(func() { copyQuiet(s, c) })
			p.wg.Go(func() { copyQuiet(c, s) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range slices.Concat(clients, p.servers, p.held) {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func copyQuiet(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *blackholeProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.servers {
		s.Close()
	}
	p.servers = nil
}

func (p *blackholeProxy) hang() {
	p.blackhole()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hung = true
}

// resume forwards new connections again; those held while hung are closed.
func (p *blackholeProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hung = false
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
}

// TestSilentlyDroppedConnection: pooled connections that went silent time
// out, are dropped, and the same call succeeds on a new connection.
func TestSilentlyDroppedConnection(t *testing.T) {
	s := startSlapd(t)
	p := newBlackholeProxy(t, s.Addr)
	o := searchModeOpts(s)
	o.URLs = []string{"ldap://" + p.l.Addr().String()}
	o.Timeout = time.Second
	a := newAuth(t, o)
	wantIdentity(t, a, "alice", "alice-pw", aliceID)
	p.blackhole()
	wantIdentity(t, a, "alice", "alice-pw", aliceID)
	if _, err := a.Lookup(context.Background(), "bob"); err != nil {
		t.Errorf("Lookup: %v", err)
	}
}

// TestHungServer: a directory that accepts connections and never answers
// (pooled connections silenced, new ones held) makes logins and lookups fail
// with a temporary error within a few timeouts, also when many queue for
// the pool at once; users whose identity is cached go on; everything works
// again once the server answers.
func TestHungServer(t *testing.T) {
	s := startSlapd(t)
	p := newBlackholeProxy(t, s.Addr)
	o := searchModeOpts(s)
	o.URLs = []string{"ldap://" + p.l.Addr().String()}
	o.Timeout, o.PoolSize = 500*time.Millisecond, 2
	const ttl = 2 * time.Second
	c := auth.NewCache(newAuth(t, o), ttl, ttl)
	ctx := context.Background()
	cached := time.Now()
	wantIdentity(t, c, "alice", "alice-pw", aliceID)
	if _, err := c.Lookup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	p.hang()

	// Sixteen logins at once, eight per connection of the pool: each
	// fails on its own within a bounded time instead of queueing behind
	// the others' timeouts (8 × 500 ms).
	bound := 5 * o.Timeout
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	for i := range 16 {
		wg.Go(func() {
			start := time.Now()
			_, err := c.Authenticate(ctx, fmt.Sprint("user", i), "pw")
			d := time.Since(start)
			wantUnavailable(t, err)
			if d > bound {
				t.Errorf("login %d failed after %v; want within %v", i, d, bound)
			}
			mu.Lock()
			slowest = max(slowest, d)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("16 logins at once on a hung server: the slowest failed after %v (timeout %v)", slowest, o.Timeout)
	if time.Since(cached) < ttl {
		if _, err := c.Authenticate(ctx, "alice", "alice-pw"); err != nil {
			t.Errorf("cached login while the server hangs: %v", err)
		}
	}
	time.Sleep(time.Until(cached.Add(ttl)))
	start := time.Now()
	if id, err := c.Lookup(ctx, "bob"); err != nil || *id != bobID {
		t.Errorf("stale Lookup while the server hangs = %+v, %v", id, err)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("stale Lookup took %v; want within %v", d, bound)
	}
	_, err := c.Authenticate(ctx, "alice", "alice-pw")
	wantUnavailable(t, err) // expired logins are never served stale

	p.resume()
	wantIdentity(t, c, "alice", "alice-pw", aliceID)
	wantInvalid(t, c, "nobody", "pw")
}
