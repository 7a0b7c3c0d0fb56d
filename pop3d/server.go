package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/metrics"
	"github.com/roost-mail/roost/netguard"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pop3d: server closed")

// DefaultIdleTimeout is the RFC 1939 section 3 minimum autologout timer.
const DefaultIdleTimeout = 10 * time.Minute

// DefaultUIDLFormat is Dovecot's default pop3_uidl_format: lower-case hex
// UID then UIDVALIDITY, 8 digits each ("000000016b071cfa").
const DefaultUIDLFormat = "%08Xu%08Xv"

// Throttle slows down clients that fail to log in (implemented by
// auth/penalty). Wait is called before every credential check and may sleep;
// Fail and Succeed report the result.
type Throttle interface {
	Wait(ctx context.Context, remote netip.Addr, user string) error
	Fail(remote netip.Addr, user string)
	Succeed(remote netip.Addr, user string)
}

// APOPAuthenticator is implemented by authenticators that can check an APOP
// digest (RFC 1939 section 7), which needs a plaintext-recoverable password.
// When Options.Auth implements it, the greeting carries an APOP timestamp
// and APOP is accepted; otherwise APOP is not offered.
type APOPAuthenticator interface {
	// AuthenticateAPOP checks that digest is the lower-case hex MD5 of
	// timestamp followed by the user's password. Errors are as for
	// auth.Authenticator.Authenticate.
	AuthenticateAPOP(ctx context.Context, username, timestamp, digest string) (*auth.Identity, error)
}

// Options configure a Server. The zero value of every field but Store and
// Auth is usable.
type Options struct {
	Store backend.Store      // required
	Auth  auth.Authenticator // required
	// Account maps an authenticated identity to the account to open. If
	// nil, the identity's Maildir is used, else Home/Maildir.
	Account func(id *auth.Identity) (backend.Account, error)
	Logger  *slog.Logger     // may be nil: no logging
	Metrics *metrics.Metrics // may be nil
	// TLSConfig enables STLS (RFC 2595); nil means STLS is not offered.
	// Certificates are re-read by its GetCertificate, if set. Connections
	// that Serve accepts as *tls.Conn (implicit TLS, port 995) are secure
	// from the start.
	TLSConfig *tls.Config
	// AllowPlaintextAuth allows USER/PASS and AUTH PLAIN/LOGIN on
	// connections that are neither TLS nor secure by IsSecure.
	AllowPlaintextAuth bool
	// IsSecure reports whether a non-TLS connection is secure anyway. If
	// nil, a connection is secure when its client and server addresses are
	// equal (webmail on the same host), or it is a Unix socket.
	IsSecure func(net.Conn) bool
	// Throttle delays failed logins; nil means no delay.
	Throttle Throttle
	// UIDLFormat is Dovecot's pop3_uidl_format syntax (see docs/pop3.md);
	// "" means DefaultUIDLFormat. A message's backend.Message.UIDL, when
	// set, overrides it.
	UIDLFormat string
	// ExpireDays advertises EXPIRE and, at QUIT, deletes retrieved (\Seen)
	// messages whose internal date is at least that many days old. 0 = off.
	ExpireDays int
	// LoginDelay advertises LOGIN-DELAY and refuses a login sooner than
	// this after the user's previous one. 0 = off.
	LoginDelay time.Duration
	// MarkSeen sets \Seen on messages sent in full by RETR (Roost's
	// configuration default is true).
	MarkSeen bool
	// IdleTimeout ends a session without traffic; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Hostname appears in the greeting and the APOP timestamp; "" means
	// the machine's host name.
	Hostname string
	// Implementation is the CAPA IMPLEMENTATION string; "" means "Roost".
	Implementation string
}

// Server is a POP3 server. Serve, Shutdown and Close behave like net/http's.
type Server struct {
	opts   Options // immutable after New
	log    *slog.Logger
	uidl   *uidlFormat
	apop   APOPAuthenticator // may be nil
	ctx    context.Context   // cancelled by Close
	cancel context.CancelFunc

	closing atomic.Bool
	nextID  atomic.Uint64
	bulk    sync.Pool      // *bulkBuffers
	wg      sync.WaitGroup // running sessions

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*wireConn]struct{}
}

// New returns a Server, or an error if opts cannot work (no store, no
// authenticator, a UIDL format it cannot produce).
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Auth == nil {
		return nil, errors.New("pop3d: Options.Store and Options.Auth are required")
	}
	if opts.UIDLFormat == "" {
		opts.UIDLFormat = DefaultUIDLFormat
	}
	uf, err := parseUIDLFormat(opts.UIDLFormat)
	if err != nil {
		return nil, fmt.Errorf("pop3d: pop3.uidl_format: %w", err)
	}
	if opts.ExpireDays < 0 || opts.LoginDelay < 0 {
		return nil, errors.New("pop3d: ExpireDays and LoginDelay must not be negative")
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
		if opts.Hostname == "" {
			opts.Hostname = "localhost"
		}
	}
	if opts.Implementation == "" {
		opts.Implementation = "Roost"
	}
	if opts.IsSecure == nil {
		opts.IsSecure = netguard.IsLocal
	}
	if opts.Account == nil {
		opts.Account = defaultAccount
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:      opts,
		log:       log,
		uidl:      uf,
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*wireConn]struct{}),
	}
	s.bulk.New = newBulkBuffers
	s.apop, _ = opts.Auth.(APOPAuthenticator)
	return s, nil
}

func defaultAccount(id *auth.Identity) (backend.Account, error) {
	dir := id.Maildir
	if dir == "" && id.Home != "" {
		dir = filepath.Join(id.Home, "Maildir")
	}
	if dir == "" {
		return backend.Account{}, fmt.Errorf("user %s has neither a Maildir nor a home directory", id.User)
	}
	return backend.Account{Name: id.User, Maildir: dir, QuotaBytes: max(id.QuotaBytes, 0),
		QuotaMessages: max(id.QuotaMessages, 0), UID: id.UID, GID: id.GID}, nil
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown or Close; it then returns ErrServerClosed. Connections that
// are *tls.Conn are treated as implicit TLS.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := netguard.Accept(ln, &delay, s.log)
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			return fmt.Errorf("pop3d: accept: %w", err)
		}
		wc := &wireConn{Conn: c, idle: s.opts.IdleTimeout, closing: &s.closing}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[wc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(wc)
	}
}

func (s *Server) serveConn(wc *wireConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, wc)
		s.mu.Unlock()
		wc.Close()
	}()
	s.opts.Metrics.ConnOpened()
	defer s.opts.Metrics.ConnClosed()
	newSession(s, wc).run()
}

// Shutdown stops accepting connections, asks every session to end after its
// current command (sessions waiting for a command get "-ERR [SYS/TEMP]" at
// once; none enters UPDATE, so nothing is deleted), and waits for them until
// ctx is done, when it calls Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		// Interrupts a session blocked reading; wireConn.Read sees closing.
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes every listener and connection at once. Sessions end without
// entering UPDATE, so nothing is deleted.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	return nil
}

// wireConn is the raw connection under any TLS layer: it counts bytes and
// puts the idle timeout on every read and write.
type wireConn struct {
	net.Conn
	idle     time.Duration
	closing  *atomic.Bool
	in, out  atomic.Int64
	timedOut atomic.Bool
}

var errShuttingDown = errors.New("server shutting down")

func (c *wireConn) Read(p []byte) (int, error) {
	// The deadline is set before checking closing, so Shutdown's
	// SetReadDeadline(now) after its store always wins.
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	if c.closing.Load() {
		return 0, errShuttingDown
	}
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.timedOut.Store(true)
		if c.closing.Load() {
			err = errShuttingDown
		}
	}
	return n, err
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}
