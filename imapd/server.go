package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/metrics"
	"github.com/roost-mail/roost/netguard"
)

// Throttle slows down and records authentication attempts (auth/penalty
// implements it). Wait blocks until an attempt from remote for user may
// proceed; Fail and Succeed report its outcome.
type Throttle interface {
	Wait(ctx context.Context, remote netip.Addr, user string) error
	Fail(remote netip.Addr, user string)
	Succeed(remote netip.Addr, user string)
}

// Options configure a Server. Store and Auth are required; every other
// field has a useful zero value.
type Options struct {
	Store backend.Store
	// Auth checks passwords. The identities it returns must carry a
	// Maildir path (wrap the backend with auth.WithDefaults).
	Auth    auth.Authenticator
	Logger  *slog.Logger     // nil discards logs
	Metrics *metrics.Metrics // may be nil
	// Throttle delays repeated failed logins; nil applies no delay.
	Throttle Throttle
	// TLSConfig enables STARTTLS and ServeTLS; nil disables both. Use
	// GetCertificate to serve a certificate that is reloaded.
	TLSConfig *tls.Config
	// AllowPlaintextAuth allows LOGIN and AUTHENTICATE without TLS on any
	// connection (security.allow_plaintext_auth).
	AllowPlaintextAuth bool
	// IsSecure reports whether a connection without TLS may still
	// authenticate. nil uses Dovecot's rule: client and server addresses
	// are equal (webmail on the same host).
	IsSecure func(net.Conn) bool
	// Delimiter is the hierarchy delimiter clients see (imap.delimiter);
	// 0 means '/'.
	Delimiter rune
	// NamespacePrefix is prepended to every folder name but INBOX
	// (imap.namespace_prefix), e.g. "INBOX." for former Courier sites.
	NamespacePrefix string
	// AppendLimit is the largest message APPEND accepts (APPENDLIMIT);
	// 0 means 50 MiB.
	AppendLimit int64
	// IdleTimeout ends an IDLE that lasts longer (RFC 9051 asks clients to
	// re-issue IDLE at least every 29 minutes); 0 means 30 minutes.
	IdleTimeout time.Duration
	// MaxUserIPConnections limits logged-in sessions per user and client
	// address (Dovecot's mail_max_userip_connections); 0 = no limit.
	MaxUserIPConnections int
	// CacheBytes bounds the memory for ENVELOPE and BODYSTRUCTURE data
	// kept between commands (about 1,200 bytes per message, with the
	// ENVELOPE's wire form); 0 means 256 MiB, negative disables the cache.
	CacheBytes int64
	// MailboxLinger keeps a mailbox open this long after its last session
	// closed it, so that reconnecting clients (phones, webmail) find it
	// ready; 0 means one minute, negative closes at once.
	MailboxLinger time.Duration
	// RescanInterval makes IDLE re-check the mailbox even when the store
	// signals no change (a safety net for late notifications and network
	// file systems); 0 means 2 seconds, the longest IDLE may stay unaware.
	RescanInterval time.Duration
}

// Server is an IMAP server. Serve, ServeTLS, Shutdown and Close follow
// net/http's lifecycle.
type Server struct {
	opts    Options // immutable after New
	log     *slog.Logger
	delim   rune
	queues  [2]*connQueue // to the go-imap servers for [plaintext auth allowed, TLS first]
	cache   *msgCache
	connIDs atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	userIP    map[string]int
	mailboxes map[string]*mailboxState
	users     map[string]*userRef
	closing   bool
	drained   chan struct{} // closed when closing and no session is left
}

// New returns a Server. It reports configuration mistakes instead of
// failing later on a connection.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Auth == nil {
		return nil, errors.New("imapd: Options.Store and Options.Auth are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Delimiter == 0 {
		opts.Delimiter = '/'
	}
	if opts.Delimiter == '"' || opts.Delimiter == '\\' || opts.Delimiter > 127 {
		return nil, fmt.Errorf("imapd: delimiter %q: use one ASCII character such as / or .", opts.Delimiter)
	}
	if p := opts.NamespacePrefix; p != "" && !strings.HasSuffix(p, string(opts.Delimiter)) {
		return nil, fmt.Errorf("imapd: namespace prefix %q must end with the delimiter %q", p, opts.Delimiter)
	}
	if opts.AppendLimit <= 0 {
		opts.AppendLimit = 50 << 20
	}
	if opts.AppendLimit > 1<<32-1 {
		opts.AppendLimit = 1<<32 - 1 // APPENDLIMIT is a 32-bit number in go-imap
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = 256 << 20
	}
	if opts.MailboxLinger == 0 {
		opts.MailboxLinger = time.Minute
	}
	if opts.RescanInterval <= 0 {
		opts.RescanInterval = 2 * time.Second
	}
	if opts.IsSecure == nil {
		opts.IsSecure = sameAddress
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		delim:     opts.Delimiter,
		cache:     newMsgCache(opts.CacheBytes),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		userIP:    make(map[string]int),
		mailboxes: make(map[string]*mailboxState),
		users:     make(map[string]*userRef),
	}
	caps := imap.CapSet{}
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapNamespace, imap.CapUIDPlus,
		imap.CapESearch, imap.CapSearchRes, imap.CapListExtended, imap.CapListStatus,
		imap.CapMove, imap.CapStatusSize, imap.CapBinary, imap.CapChildren,
		imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapLiteralPlus,
	} {
		caps[c] = struct{}{}
	}
	mk := func(insecure bool) *imapserver.Server {
		return imapserver.New(&imapserver.Options{
			NewSession:   s.newSession,
			Caps:         caps,
			Logger:       libLogger{s.log},
			TLSConfig:    opts.TLSConfig,
			InsecureAuth: insecure,
		})
	}
	for i, srv := range []*imapserver.Server{mk(true), mk(false)} {
		q := newConnQueue()
		s.queues[i] = q
		go srv.Serve(q) //nolint:errcheck // returns when the queue closes
	}
	return s, nil
}

// Serve accepts connections on ln (plaintext, with STARTTLS when a TLS
// config is set) until Shutdown or Close. It always returns an error.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections (port 993) on ln.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("imapd: ServeTLS needs Options.TLSConfig")
	}
	return s.serve(ln, true)
}

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown or Close.
var ErrServerClosed = errors.New("imapd: server closed")

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
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
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			return fmt.Errorf("imapd: accept: %w", err)
		}
		s.opts.Metrics.ConnOpened()
		cc := &countConn{Conn: c, id: s.connIDs.Add(1), start: time.Now()}
		var nc net.Conn = cc
		q := s.queues[1]
		if implicitTLS {
			nc = tls.Server(cc, s.opts.TLSConfig)
			cc.tls = true
		} else if s.opts.AllowPlaintextAuth || s.opts.IsSecure(c) {
			q = s.queues[0]
		}
		if !q.put(nc) {
			s.opts.Metrics.ConnClosed()
			c.Close()
			return ErrServerClosed
		}
	}
}

// Shutdown stops accepting connections, says BYE to every client and waits
// until their sessions end or ctx is done, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	var byes []*session
	for sess := range s.sessions {
		byes = append(byes, sess)
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
		if len(s.sessions) == 0 {
			close(s.drained)
		}
	}
	drained := s.drained
	s.mu.Unlock()
	for _, sess := range byes {
		go sess.conn.Bye("Server shutting down")
	}
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.Close()
	return err
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	var conns []net.Conn
	for sess := range s.sessions {
		conns = append(conns, sess.cc)
	}
	var idle []*mailboxState
	for _, st := range s.mailboxes {
		if st.refs == 0 {
			idle = append(idle, st)
		}
	}
	s.mu.Unlock()
	for _, st := range idle {
		s.expireMailbox(st)
	}
	// Closing the queues ends go-imap's accept loops; its own Close is not
	// used, as it races with a Serve that has just started.
	for _, q := range s.queues {
		q.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

func (s *Server) addSession(sess *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.sessions[sess] = struct{}{}
	return nil
}

func (s *Server) removeSession(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
	if s.drained != nil && len(s.sessions) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// claimUserIP counts a logged-in session of user from addr, refusing it
// past MaxUserIPConnections. release undoes the claim.
func (s *Server) claimUserIP(user string, addr netip.Addr) (release func(), ok bool) {
	key := user + "\x00" + addr.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if max := s.opts.MaxUserIPConnections; max > 0 && s.userIP[key] >= max {
		return nil, false
	}
	s.userIP[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.userIP[key]--; s.userIP[key] <= 0 {
			delete(s.userIP, key)
		}
	}, true
}

// sameAddress is Dovecot's notion of a secure connection without TLS: the
// client connects from the server's own address.
func sameAddress(c net.Conn) bool {
	l, r := addrOf(c.LocalAddr()), addrOf(c.RemoteAddr())
	return l.IsValid() && l == r
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// countConn counts the octets of one client connection, below TLS, and
// carries what the session logs about it. While batching, it gathers
// writes: go-imap flushes after every response line, which would cost a
// system call per message of a large FETCH.
type countConn struct {
	net.Conn
	id      uint64
	start   time.Time
	tls     bool // implicit TLS
	in, out atomic.Int64

	wmu      sync.Mutex
	batching bool
	wbuf     []byte

	// cmdBytes counts octets read since a command last reached the
	// session; past maxCommandBytes every Read fails with errCommandTooLong,
	// except while an APPEND literal streams (appending).
	cmdBytes  atomic.Int64
	appending atomic.Bool
	tooLong   atomic.Bool
	// ahead and aheadErr hold what watchPeer read while a command ran.
	// Only the goroutine that reads the connection touches them, or
	// watchPeer's goroutine while that one waits for it.
	ahead    []byte
	aheadErr error
}

// maxCommandBytes bounds what a client may send for one command, literals
// included, APPEND's message excepted. go-imap limits a command line to
// 50 KiB but not the literals in it (up to 4 KiB each, any number of
// them), so without this bound one SEARCH could make the server hold any
// amount of memory while it is parsed.
const maxCommandBytes = 1 << 20

// errCommandTooLong is what the parser sees once a command passed
// maxCommandBytes; go-imap answers it and then ends the connection, as
// every later Read fails too.
var errCommandTooLong = &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeLimit,
	Text: "Command too long (over 1 MiB with its literals); closing the connection"}

// commandSeen restarts the count of a command's octets: the session calls
// it whenever go-imap hands it a command.
func (c *countConn) commandSeen() { c.cmdBytes.Store(0) }

// streamLiteral lifts maxCommandBytes while an APPEND message is read (its
// size is bounded by Options.AppendLimit instead).
func (c *countConn) streamLiteral() (done func()) {
	c.appending.Store(true)
	return func() {
		c.appending.Store(false)
		c.cmdBytes.Store(0)
	}
}

// watchPeer notices, while a long command runs, that the client has gone:
// it reads ahead from the connection (go-imap does not read while a
// command runs) and calls gone when the read fails. What it reads is kept
// for go-imap's next Read, up to 64 KiB; stop ends the watch and must be
// called before go-imap reads again.
func (c *countConn) watchPeer(gone func()) (stop func()) {
	const maxAhead = 64 << 10
	if c.aheadErr != nil || len(c.ahead) >= maxAhead {
		return func() {}
	}
	c.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck // go-imap sets its own again before it reads
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for !stopping.Load() && len(c.ahead) < maxAhead {
			n, err := c.Conn.Read(buf)
			c.in.Add(int64(n))
			c.ahead = append(c.ahead, buf[:n]...)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					c.aheadErr = err
					gone()
				}
				return
			}
		}
	}()
	return func() {
		stopping.Store(true)
		c.Conn.SetReadDeadline(time.Now()) //nolint:errcheck // ends the Read at once
		<-done
		c.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
	}
}

const batchSize = 64 << 10

// batch starts gathering writes until the returned function is called.
func (c *countConn) batch() (flush func() error) {
	c.wmu.Lock()
	c.batching = true
	c.wmu.Unlock()
	return func() error {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		c.batching = false
		err := c.flushLocked()
		c.wbuf = nil
		return err
	}
}

func (c *countConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	n, err := c.Conn.Write(c.wbuf)
	c.out.Add(int64(n))
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *countConn) Read(b []byte) (int, error) {
	if c.tooLong.Load() {
		return 0, errCommandTooLong
	}
	var n int
	var err error
	switch {
	case len(c.ahead) > 0:
		n = copy(b, c.ahead)
		c.ahead = c.ahead[n:]
		if len(c.ahead) == 0 {
			c.ahead = nil
		}
	case c.aheadErr != nil:
		err, c.aheadErr = c.aheadErr, nil
	default:
		n, err = c.Conn.Read(b)
		c.in.Add(int64(n))
	}
	if c.cmdBytes.Add(int64(n)) > maxCommandBytes && !c.appending.Load() {
		c.tooLong.Store(true)
		return 0, errCommandTooLong
	}
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batching {
		if c.wbuf == nil {
			c.wbuf = make([]byte, 0, batchSize)
		}
		if len(c.wbuf)+len(b) > batchSize {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if len(b) < batchSize {
			c.wbuf = append(c.wbuf, b...)
			return len(b), nil
		}
	}
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// connQueue is a net.Listener fed by Server's own accept loops, so that
// each connection goes to the imapserver.Server with the right
// authentication policy.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) put(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }

// libLogger passes go-imap's messages to slog. Read errors are what every
// dropped client causes, so they are debug messages.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "failed to read command") || strings.HasPrefix(msg, "failed to write greeting") {
		l.log.Debug("imap connection ended", "detail", msg)
		return
	}
	l.log.Warn("imap library", "detail", msg)
}
