package pop3d

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// plaintextAllowed reports whether USER/PASS and AUTH PLAIN/LOGIN may be
// used: on TLS, on a connection secure by IsSecure, or when allowed.
func (s *session) plaintextAllowed() bool {
	return s.secure || s.srv.opts.AllowPlaintextAuth
}

const msgPlaintextRefused = "-ERR [AUTH] Plaintext authentication is not allowed without TLS: use STLS or port 995"

func (s *session) cmdUSER(args string) error {
	if !s.plaintextAllowed() {
		s.reply(msgPlaintextRefused)
		return nil
	}
	if args == "" || len(args) > 255 {
		return s.badCommand("USER needs a user name")
	}
	s.pendingUser = args
	s.reply("+OK")
	return nil
}

func (s *session) cmdPASS(args string) error {
	if !s.plaintextAllowed() {
		s.reply(msgPlaintextRefused)
		return nil
	}
	if s.pendingUser == "" {
		return s.badCommand("Send USER first")
	}
	user := s.pendingUser
	s.pendingUser = ""
	// RFC 1939 section 7: spaces may be part of the password.
	return s.login(user, "PASS", func(ctx context.Context) (*auth.Identity, error) {
		return s.srv.opts.Auth.Authenticate(ctx, user, args)
	})
}

// cmdAPOP checks an RFC 1939 section 7 digest; it is offered only when the
// authenticator implements APOPAuthenticator. APOP never sends the password,
// so it is allowed without TLS.
func (s *session) cmdAPOP(args string) error {
	if s.srv.apop == nil {
		return s.badCommand("APOP is not available on this server")
	}
	f, ok := splitArgs(args, 2, 2)
	if !ok || len(f[1]) != 32 {
		return s.badCommand("Usage: APOP name digest")
	}
	s.pendingUser = ""
	user, digest := f[0], strings.ToLower(f[1])
	return s.login(user, "APOP", func(ctx context.Context) (*auth.Identity, error) {
		return s.srv.apop.AuthenticateAPOP(ctx, user, s.timestamp, digest)
	})
}

// cmdAUTH runs a SASL exchange (RFC 5034). "AUTH" alone lists the
// mechanisms, as older clients expect.
func (s *session) cmdAUTH(args string) error {
	s.pendingUser = ""
	if args == "" {
		s.reply("+OK")
		if s.plaintextAllowed() {
			s.reply("PLAIN")
			s.reply("LOGIN")
		}
		s.reply(".")
		return nil
	}
	mech, initial, hasInitial := strings.Cut(args, " ")
	mech = strings.ToUpper(mech)
	if newSASLServer(mech) == nil {
		s.reply("-ERR Unsupported authentication mechanism")
		return nil
	}
	if !s.plaintextAllowed() {
		s.reply(msgPlaintextRefused)
		return nil
	}
	user, pass, err := runSASL(mech, initial, hasInitial, func(challenge []byte) (string, error) {
		s.reply("+ %s", base64.StdEncoding.EncodeToString(challenge))
		if err := s.flush(); err != nil {
			return "", err
		}
		line, err := s.readLine(maxAuthLine)
		if errors.Is(err, errLineTooLong) {
			return "", errSASLTooLong
		}
		return line, err
	})
	if isSASLError(err) {
		return s.saslFailed(err)
	}
	if err != nil {
		return err
	}
	return s.login(user, "AUTH "+mech, func(ctx context.Context) (*auth.Identity, error) {
		return s.srv.opts.Auth.Authenticate(ctx, user, pass)
	})
}

func (s *session) saslFailed(err error) error {
	if errors.Is(err, errSASLCancelled) {
		s.reply("-ERR Authentication cancelled")
		return nil
	}
	return s.badCommand("Authentication failed: " + err.Error())
}

// cmdSTLS starts TLS (RFC 2595 section 4). It refuses when the client has
// already sent more input, which an attacker could have injected in
// plaintext (the STARTTLS command injection of CVE-2011-0411).
func (s *session) cmdSTLS(args string) error {
	switch {
	case args != "":
		return s.badCommand("STLS takes no arguments")
	case s.srv.opts.TLSConfig == nil:
		s.reply("-ERR TLS is not available on this server")
		return nil
	case s.tls:
		s.reply("-ERR TLS is already active")
		return nil
	case s.br.Buffered() > 0:
		return s.badCommand("STLS refused: commands were pipelined after STLS")
	}
	s.reply("+OK Begin TLS negotiation")
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.startTLS(); err != nil {
		return err
	}
	// Forget everything learnt before TLS (RFC 2595 section 4).
	s.pendingUser = ""
	return nil
}

// login checks credentials with check, throttled, and opens the maildrop.
func (s *session) login(user, mech string, check func(context.Context) (*auth.Identity, error)) error {
	name := auth.Normalize(user)
	if t := s.srv.opts.Throttle; t != nil {
		if err := t.Wait(s.ctx, s.remote, name); err != nil {
			return err
		}
	}
	id, err := check(s.ctx)
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials):
		s.srv.opts.Metrics.Login("fail")
		if t := s.srv.opts.Throttle; t != nil {
			t.Fail(s.remote, name)
		}
		s.log.Info("pop3 login failed", "user", visible(name), "mech", mech)
		s.authFails++
		s.reply("-ERR [AUTH] Authentication failed")
		if s.authFails >= maxAuthFailures {
			s.stats.end = "auth-failures"
			return errors.New("too many failed logins")
		}
		return nil
	case err != nil:
		s.srv.opts.Metrics.Login("tempfail")
		s.log.Warn("pop3 login could not be checked", "user", visible(name), "mech", mech, "err", err)
		s.reply("-ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later")
		return nil
	}
	if t := s.srv.opts.Throttle; t != nil {
		t.Succeed(s.remote, name)
	}
	s.srv.opts.Metrics.Login("ok")
	anon := s.log
	s.log = s.log.With("user", id.User)
	drop, rc := s.openMaildrop(id)
	if drop == nil {
		s.log = anon // the client may log in again, maybe as someone else
		s.reply("%s", rc)
		return nil
	}
	s.user, s.drop, s.state = id.User, drop, stateTransaction
	s.log.Info("pop3 login", "mech", mech, "tls", s.tls, "messages", drop.count, "octets", drop.size)
	s.reply("+OK Logged in, %d messages (%d octets)", drop.count, drop.size)
	return nil
}

// openMaildrop locks and snapshots the user's INBOX. On failure it returns
// the -ERR reply to send.
func (s *session) openMaildrop(id *auth.Identity) (*maildrop, string) {
	acct, err := s.srv.opts.Account(id)
	if err != nil {
		s.log.Error("pop3 no account for user", "err", err)
		return nil, "-ERR [SYS/PERM] Your mailbox is not configured; contact your administrator"
	}
	u, err := s.srv.opts.Store.Open(s.ctx, acct)
	if err != nil {
		s.log.Error("pop3 cannot open mail", "maildir", acct.Maildir, "err", err)
		return nil, "-ERR [SYS/TEMP] Cannot open your mailbox, try again later"
	}
	release, err := u.Lock(s.ctx, "pop3")
	if err != nil {
		u.Close()
		if errors.Is(err, backend.ErrLocked) {
			s.log.Info("pop3 maildrop in use")
			return nil, "-ERR [IN-USE] Your mailbox is in use by another POP3 session"
		}
		s.log.Error("pop3 cannot lock maildrop", "err", err)
		return nil, "-ERR [SYS/TEMP] Cannot lock your mailbox, try again later"
	}
	fail := func(reply string) (*maildrop, string) {
		release()
		u.Close()
		return nil, reply
	}
	now := time.Now()
	if d := s.srv.opts.LoginDelay; d > 0 {
		last, err := readLastLogin(acct.Maildir)
		if err != nil {
			s.log.Warn("pop3 cannot read last login time; allowing login", "err", err)
		} else if wait := last.Add(d).Sub(now); wait > 0 {
			s.log.Info("pop3 login too soon", "wait", wait.Round(time.Second))
			return fail(fmt.Sprintf("-ERR [LOGIN-DELAY] Logins are allowed every %d seconds; try again in %d seconds",
				loginDelaySeconds(d), loginDelaySeconds(wait)))
		}
	}
	mbox, err := u.OpenMailbox(s.ctx, "INBOX")
	if err != nil {
		s.log.Error("pop3 cannot open INBOX", "err", err)
		return fail("-ERR [SYS/TEMP] Cannot open your INBOX, try again later")
	}
	snap, err := mbox.Sync(s.ctx)
	var drop *maildrop
	if err == nil {
		drop, err = newMaildrop(s.ctx, u, mbox, release, snap, s.srv.opts.MarkSeen)
	}
	if err != nil {
		mbox.Close()
		s.log.Error("pop3 cannot read INBOX", "err", err)
		return fail("-ERR [SYS/TEMP] Cannot read your INBOX, try again later")
	}
	if s.srv.opts.LoginDelay > 0 {
		if err := writeLastLogin(acct, now); err != nil {
			s.log.Warn("pop3 cannot record login time for LOGIN-DELAY", "err", err)
		}
	}
	return drop, ""
}

// newTimestamp makes an RFC 1939 APOP timestamp: unique per greeting.
func newTimestamp(host string) string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("<%d.%s.%d@%s>", os.Getpid(), hex.EncodeToString(b[:]), time.Now().Unix(), host)
}

// loginDelaySeconds rounds d up to whole seconds.
func loginDelaySeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
