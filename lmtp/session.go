package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// session is one LMTP connection. go-smtp calls its methods one at a time,
// except Logout, which Server.Close may call while LMTPData runs in its own
// goroutine; mu keeps the two apart.
type session struct {
	srv    *Server
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	mu     sync.Mutex // held by LMTPData and Logout

	from  string
	size  int64 // SIZE= from MAIL FROM, 0 if not given
	rcpts []*recipient
	users map[string]backend.User // open stores, by Maildir path
	// spoolFile holds the current message. It is created at the first DATA
	// and unlinked at once, so a crash leaves nothing behind, and reused
	// for every transaction of the connection: creating a file costs more
	// than writing 10 KB while other deliveries fsync.
	spoolFile *os.File
}

type recipient struct {
	addr   string // as given in RCPT TO, for replies and Delivered-To
	detail string // the +detail, or ""
	acct   backend.Account
	user   backend.User
}

func (s *session) Reset() {
	s.from, s.size = "", 0
	s.rcpts = nil
	s.closeUsers()
}

func (s *session) Logout() error {
	s.cancel() // a delivery in progress stops at its next context check
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Reset()
	if s.spoolFile != nil {
		s.spoolFile.Close()
	}
	s.srv.opts.Metrics.ConnClosed()
	return nil
}

func (s *session) closeUsers() {
	for k, u := range s.users {
		if err := u.Close(); err != nil {
			s.log.Warn("closing mail store", "user", u.Name(), "error", err)
		}
		delete(s.users, k)
	}
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	s.from = from
	if opts != nil {
		s.size = opts.Size
	}
	return nil
}

// Rcpt resolves the recipient and checks the quota with the announced size,
// so that Postfix learns about a full mailbox before sending the message.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	o := &s.srv.opts
	name, detail := s.srv.splitAddress(to)
	log := s.log.With("rcpt", to)
	id, err := o.Auth.Lookup(s.ctx, name)
	if err != nil {
		return s.fail(log, "lookup", err)
	}
	acct, err := o.Quota.Account(id, o.SystemLayout)
	if err != nil {
		return s.fail(log, "account", err)
	}
	u, err := s.openUser(acct)
	if err != nil {
		return s.fail(log.With("user", acct.Name), "open store", err)
	}
	q, err := u.Quota(s.ctx)
	if err != nil {
		return s.fail(log.With("user", acct.Name), "read quota", err)
	}
	if err := o.Quota.Check(q, s.size); err != nil {
		return s.fail(log.With("user", acct.Name), "rcpt", err)
	}
	s.rcpts = append(s.rcpts, &recipient{addr: to, detail: detail, acct: acct, user: u})
	return nil
}

func (s *session) openUser(acct backend.Account) (backend.User, error) {
	if u, ok := s.users[acct.Maildir]; ok {
		return u, nil
	}
	u, err := s.srv.opts.Store.Open(s.ctx, acct)
	if err != nil {
		return nil, err
	}
	if s.users == nil {
		s.users = make(map[string]backend.User)
	}
	s.users[acct.Maildir] = u
	return u, nil
}

// splitAddress turns an RCPT address into the name to look up and the
// +detail. The delimiter's first occurrence splits, as in Postfix.
func (s *Server) splitAddress(addr string) (name, detail string) {
	local, domain, hasDomain := cutLast(addr, "@")
	if d := s.opts.RecipientDelimiter; d != "" {
		if base, det, ok := strings.Cut(local, d); ok && base != "" {
			local, detail = base, det
		}
	}
	if !hasDomain || slices.ContainsFunc(s.opts.LocalDomains, func(ld string) bool { return strings.EqualFold(ld, domain) }) {
		return auth.Normalize(local), detail
	}
	return auth.Normalize(local + "@" + domain), detail
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// Data is required by smtp.Session but never called: go-smtp in LMTP mode
// calls LMTPData.
func (s *session) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Use LMTP"}
}

// LMTPData spools the message, then stores it for each recipient in turn and
// reports each result as soon as it is known (RFC 2033 4.2).
func (s *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	spool, size, err := s.spool(r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			return smtp.ErrDataTooLarge
		}
		s.log.Error("spooling message failed", "error", err)
		return tempFail("Temporary failure spooling the message")
	}
	for _, rc := range s.rcpts {
		status.SetStatus(rc.addr, s.deliver(rc, spool, size))
	}
	s.srv.opts.Metrics.Command("DATA", time.Since(start))
	return nil
}

// spool copies the message into the session's spool file and returns it
// with the message's size.
func (s *session) spool(r io.Reader) (*os.File, int64, error) {
	if s.spoolFile == nil {
		f, err := os.CreateTemp(s.srv.opts.SpoolDir, "roost-lmtp-*")
		if err != nil {
			return nil, 0, err
		}
		os.Remove(f.Name())
		s.spoolFile = f
	}
	f := s.spoolFile
	if err := f.Truncate(0); err != nil {
		return nil, 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, 0, err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		return nil, 0, err
	}
	s.srv.opts.Metrics.Bytes(n, 0)
	return f, n, nil
}

// deliver stores the spooled message for one recipient and returns its
// reply (an *smtp.SMTPError, with code 250 on success).
func (s *session) deliver(rc *recipient, spool *os.File, size int64) error {
	o := &s.srv.opts
	log := s.log.With("rcpt", rc.addr, "user", rc.acct.Name)
	hdr := fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", s.from, rc.addr)
	d := Delivery{Policy: o.Quota, User: rc.user, Account: rc.acct, Logger: log}
	if o.DetailFolders {
		d.Folder = rc.detail
	}
	res, folder, dup, err := d.Store(s.ctx, hdr, spool, size)
	if err != nil {
		return s.fail(log, "data", err)
	}
	if !dup {
		o.Metrics.Delivery("ok")
		log.Info("delivered", "from", s.from, "mailbox", folder, "uid", res.UID, "size", res.Size)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: fmt.Sprintf("Saved UID %d in %s", res.UID, folder)}
}

// fail logs err and translates it into the LMTP reply, in one place.
func (s *session) fail(log *slog.Logger, stage string, err error) *smtp.SMTPError {
	m := s.srv.opts.Metrics
	switch {
	case errors.Is(err, auth.ErrNoSuchUser):
		log.Info("recipient rejected: no such user")
		m.Delivery("nouser")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	case errors.Is(err, backend.ErrOverQuota):
		m.QuotaRejection()
		m.Delivery("overquota")
		if s.srv.opts.Quota.Permanent() {
			log.Info("recipient rejected: over quota (permanent)", "stage", stage, "reason", err)
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Quota exceeded (mailbox for user is full)"}
		}
		log.Info("recipient deferred: over quota", "stage", stage, "reason", err)
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Quota exceeded (mailbox for user is full)"}
	case errors.Is(err, auth.ErrUnavailable):
		log.Warn("recipient deferred: auth backend unavailable", "stage", stage, "error", err)
		m.Delivery("tempfail")
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary authentication failure, try again later"}
	}
	log.Error("recipient deferred: temporary failure", "stage", stage, "error", err)
	m.Delivery("tempfail")
	return tempFail("Temporary failure, try again later")
}

func tempFail(msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: msg}
}
