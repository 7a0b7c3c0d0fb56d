package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// session is one client connection. go-imap calls its methods from the
// connection's goroutine, one at a time (IDLE runs alone in its own), so
// its fields need no lock.
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	cc     *countConn
	remote netip.Addr
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	ur        *userRef     // nil until logged in
	user      backend.User // ur.u
	username  string
	loginAt   time.Time
	releaseIP func()
	sel       *selected // nil unless a mailbox is selected

	// mu guards the session against its own IDLE goroutine, which go-imap
	// may leave running when the connection drops (see Idle).
	mu     sync.Mutex
	closed bool
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionSASL        = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func (s *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	nc := c.NetConn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cc, ok := nc.(*countConn)
	if !ok { // cannot happen: every connection comes from serve
		return nil, nil, errors.New("imapd: connection not accepted by imapd.Server")
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{
		srv:    s,
		conn:   c,
		cc:     cc,
		remote: addrOf(cc.RemoteAddr()),
		ctx:    ctx,
		cancel: cancel,
	}
	sess.log = s.log.With("conn", cc.id, "remote", sess.remote.String())
	if err := s.addSession(sess); err != nil {
		cancel()
		s.opts.Metrics.ConnClosed()
		return nil, nil, err
	}
	return sess, nil, nil
}

func (s *session) secure() bool {
	_, ok := s.conn.NetConn().(*tls.Conn)
	return ok
}

// Close ends the session: it runs once, when the connection is gone.
func (s *session) Close() error {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.unselect()
	if s.cc.tooLong.Load() {
		s.log.Warn("connection closed: command too long", "limit_bytes", maxCommandBytes)
	}
	if s.user != nil {
		in, out := s.cc.in.Load(), s.cc.out.Load()
		s.log.Info("logout", "duration", time.Since(s.loginAt).Round(time.Millisecond),
			"bytes_in", in, "bytes_out", out)
		s.srv.releaseUser(s.ur)
		s.releaseIP()
	}
	s.srv.opts.Metrics.Bytes(s.cc.in.Load(), s.cc.out.Load())
	s.srv.opts.Metrics.ConnClosed()
	s.srv.removeSession(s)
	return nil
}

// Login implements LOGIN and the PLAIN and LOGIN SASL mechanisms.
func (s *session) Login(username, password string) error {
	s.cc.commandSeen()
	start := time.Now()
	name := auth.Normalize(username)
	result := func(res string, err error) {
		attrs := []any{"user", name, "tls", s.secure(), "result", res, "duration", time.Since(start).Round(time.Millisecond)}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		s.log.Info("login", attrs...)
		s.srv.opts.Metrics.Login(res)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	th := s.srv.opts.Throttle
	if th != nil {
		if err := th.Wait(ctx, s.remote, name); err != nil {
			result("tempfail", err)
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
				Text: "Too many failed logins, try again later"}
		}
	}
	id, err := s.srv.opts.Auth.Authenticate(ctx, username, password)
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials):
		if th != nil {
			th.Fail(s.remote, name)
		}
		result("fail", nil)
		return imapserver.ErrAuthFailed
	case err != nil:
		result("tempfail", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Authentication is temporarily unavailable, try again later"}
	}
	if id.Maildir == "" {
		err := errors.New("the authenticator gave no Maildir path (wrap it with auth.WithDefaults)")
		result("tempfail", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
			Text: "Mailbox location unknown; the administrator has been told"}
	}
	release, ok := s.srv.claimUserIP(id.User, s.remote)
	if !ok {
		result("limit", nil)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
			Text: "Too many connections for this user from your address"}
	}
	acct := backend.Account{Name: id.User, Maildir: id.Maildir, UID: id.UID, GID: id.GID,
		QuotaBytes: max(id.QuotaBytes, 0), QuotaMessages: max(id.QuotaMessages, 0)}
	ur, err := s.srv.acquireUser(ctx, acct)
	if err != nil {
		release()
		result("tempfail", err)
		return s.fail("open mail store", err)
	}
	if th != nil {
		th.Succeed(s.remote, name)
	}
	result("ok", nil)
	s.ur, s.user, s.username, s.loginAt, s.releaseIP = ur, ur.u, id.User, time.Now(), release
	s.log = s.log.With("user", id.User)
	return nil
}

// AuthenticateMechanisms offers LOGIN besides PLAIN: Outlook and some
// phones use only LOGIN.
func (s *session) AuthenticateMechanisms() []string { return []string{"PLAIN", "LOGIN"} }

func (s *session) Authenticate(mech string) (sasl.Server, error) {
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthorizationFailed,
					Text: "Logging in as another user is not supported"}
			}
			return s.Login(username, password)
		}), nil
	case "LOGIN":
		return newLoginServer(s.Login), nil
	}
	return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported authentication mechanism"}
}

// timed records how long a command took (go-imap has no command hook, so
// each handler reports its own) and marks that a command reached the
// session (see maxCommandBytes).
func (s *session) timed(name string) func() {
	s.cc.commandSeen()
	start := time.Now()
	return func() { s.srv.opts.Metrics.Command(name, time.Since(start)) }
}

// AppendLimit is announced as APPENDLIMIT= (RFC 7889).
func (s *session) AppendLimit() uint32 { return uint32(s.srv.opts.AppendLimit) }

// Namespace reports the one personal namespace (RFC 2342).
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{
		{Prefix: s.srv.opts.NamespacePrefix, Delim: s.srv.delim},
	}}, nil
}
