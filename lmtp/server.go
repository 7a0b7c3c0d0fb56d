// Package lmtp is Roost's LMTP delivery front end (RFC 2033) for Postfix,
// built on github.com/emersion/go-smtp in LMTP mode. It resolves recipients
// through the auth backend's Lookup, applies the quota policy (package quota)
// at RCPT time using the SIZE= parameter (RFC 1870) and again after DATA, and
// stores each message through backend.Store with one reply per recipient.
//
// Implementation notes (invariants):
//   - A 250 reply for a recipient is written only after the store's Append
//     returned, and Append fsyncs the file and the directory first: an
//     acknowledged message survives a crash, and a refused or interrupted
//     one leaves nothing visible (backend.Store's contract).
//   - The message is spooled once to a temporary file, never held in memory,
//     and read from there for every recipient.
//   - Temporary conditions (auth backend down, store errors, over quota
//     unless quota.Permanent) get 4xx replies so Postfix keeps the message
//     queued; only "no such user" and a permanent over-quota are 5xx.
//   - Each recipient gets Return-Path and Delivered-To header lines in
//     front of the message as received (RFC 5321 4.4).
//   - The package knows no concrete store or auth backend; cmd/lmtpd wires
//     them in.
package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/metrics"
	"github.com/roost-mail/roost/quota"
)

// Lookup finds a recipient; auth.Authenticator satisfies it. It returns an
// error wrapping auth.ErrNoSuchUser or auth.ErrUnavailable.
type Lookup interface {
	Lookup(ctx context.Context, username string) (*auth.Identity, error)
}

// Options configure a Server. Auth, Store and Quota are required; the Auth
// backend must return identities with a Maildir path (auth.WithDefaults).
type Options struct {
	Auth  Lookup
	Store backend.Store
	// Quota is the policy applied at RCPT and after DATA; it also turns a
	// looked-up identity into the store account (quota.Policy.Account).
	Quota *quota.Policy
	// SystemLayout makes new files belong to the recipient's UID and GID
	// from the auth backend (mail.layout: system; lmtpd runs as root).
	SystemLayout bool
	// Hostname is announced in the greeting ("" = os.Hostname).
	Hostname string
	// RecipientDelimiter separates a detail from the local part
	// ("alice+lists"); "" disables details.
	RecipientDelimiter string
	// DetailFolders delivers user+detail to the folder named detail when it
	// exists (else INBOX).
	DetailFolders bool
	// LocalDomains are domains whose recipients are looked up by local part
	// only (Postfix mailbox_transport sends user@$myhostname for local
	// users). Other addresses are looked up in full.
	LocalDomains []string
	// MaxMessageBytes limits one message (0 = unlimited).
	MaxMessageBytes int64
	// MaxRecipients limits recipients per transaction (0 = 1000).
	MaxRecipients int
	// SpoolDir holds messages while they are delivered ("" = os.TempDir).
	SpoolDir string
	// Timeout bounds each read and write on a connection (0 = 10 minutes).
	Timeout time.Duration
	// Logger gets one line per decision; nil = discard.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
}

// Server is an LMTP server. Serve may be called for several listeners.
type Server struct {
	opts   Options // immutable after New
	smtp   *smtp.Server
	log    *slog.Logger
	connID atomic.Uint64
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
}

// New checks opts and returns a server ready to Serve.
func New(opts Options) (*Server, error) {
	if opts.Auth == nil || opts.Store == nil || opts.Quota == nil {
		return nil, errors.New("lmtp: Options.Auth, Store and Quota are required")
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("lmtp: no hostname configured and os.Hostname failed: %w", err)
		}
		opts.Hostname = h
	}
	if opts.MaxRecipients == 0 {
		opts.MaxRecipients = 1000
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.LMTP = true
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	// RFC 5322 lines are at most 998 octets, but mail in the wild has
	// longer ones and Postfix passes them on; refusing them would bounce
	// real mail. The limit only bounds memory per line.
	srv.MaxLineLength = 1 << 20
	srv.ReadTimeout = opts.Timeout
	srv.WriteTimeout = opts.Timeout
	srv.ErrorLog = log.New(slogWriter{opts.Logger}, "", 0)
	s.smtp = srv
	return s, nil
}

// Serve accepts connections on l until Shutdown or Close; it returns nil
// then, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	err := s.smtp.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for open ones to end (a
// transaction in progress completes) or for ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.smtp.Shutdown(ctx)
	s.cancel()
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close cuts every connection at once. Messages not yet acknowledged stay
// in Postfix's queue.
func (s *Server) Close() error {
	s.cancel()
	err := s.smtp.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.opts.Metrics.ConnOpened()
	remote := "local"
	if a := c.Conn().RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		remote = a.String()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	return &session{
		srv:    s,
		ctx:    ctx,
		cancel: cancel,
		log:    s.log.With("conn", s.connID.Add(1), "remote", remote),
	}, nil
}

// slogWriter passes go-smtp's internal log to slog: panics are errors,
// connection problems (a client that hung up) are not.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "panic") {
		w.log.Error("lmtp server", "error", msg)
	} else {
		w.log.Info("lmtp connection", "error", msg)
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
