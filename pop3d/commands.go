package pop3d

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// command is one entry of the command table: the states it is valid in and
// its handler. args is everything after the keyword and one space.
type command struct {
	states state
	handle func(s *session, args string) error
}

// commands is the one command table (read-only).
var commands = map[string]command{
	"CAPA": {stateAuthorization | stateTransaction, (*session).cmdCAPA},
	"QUIT": {stateAuthorization | stateTransaction, (*session).cmdQUIT},
	"USER": {stateAuthorization, (*session).cmdUSER},
	"PASS": {stateAuthorization, (*session).cmdPASS},
	"APOP": {stateAuthorization, (*session).cmdAPOP},
	"AUTH": {stateAuthorization, (*session).cmdAUTH},
	"STLS": {stateAuthorization, (*session).cmdSTLS},
	"STAT": {stateTransaction, (*session).cmdSTAT},
	"LIST": {stateTransaction, (*session).cmdLIST},
	"RETR": {stateTransaction, (*session).cmdRETR},
	"DELE": {stateTransaction, (*session).cmdDELE},
	"NOOP": {stateTransaction, (*session).cmdNOOP},
	"RSET": {stateTransaction, (*session).cmdRSET},
	"TOP":  {stateTransaction, (*session).cmdTOP},
	"UIDL": {stateTransaction, (*session).cmdUIDL},
}

// parseCommand splits a command line into an upper-cased keyword and the
// raw argument string (RFC 1939 section 3: keyword, one space, arguments;
// PASS may contain spaces, so arguments are not split here).
func parseCommand(line string) (name, args string, err error) {
	name, args, _ = strings.Cut(line, " ")
	if name == "" || len(name) > 4 {
		return "", "", errors.New("invalid command")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return "", "", errors.New("invalid command")
		}
	}
	return strings.ToUpper(name), args, nil
}

// dispatch runs one command line; readErr is errLineTooLong or nil. The
// returned error ends the session.
func (s *session) dispatch(line string, readErr error) error {
	if readErr != nil {
		return s.badCommand("Line too long (RFC 2449 allows 255 octets)")
	}
	name, args, err := parseCommand(line)
	if err != nil {
		return s.badCommand("Unknown command")
	}
	if name != "AUTH" && len(line)+2 > maxCommandLine {
		return s.badCommand("Line too long (RFC 2449 allows 255 octets)")
	}
	cmd, ok := commands[name]
	if !ok {
		return s.badCommand("Unknown command: " + visible(name))
	}
	if cmd.states&s.state == 0 {
		return s.badCommand(name + " is not valid in the " + s.state.String() + " state")
	}
	start := time.Now()
	err = cmd.handle(s, args)
	s.srv.opts.Metrics.Command(name, time.Since(start))
	return err
}

// splitArgs splits arguments on single spaces (RFC 1939 section 3) and
// checks their number.
func splitArgs(args string, minN, maxN int) ([]string, bool) {
	var f []string
	if args != "" {
		f = strings.Split(args, " ")
	}
	if len(f) < minN || len(f) > maxN {
		return nil, false
	}
	for _, a := range f {
		if a == "" {
			return nil, false
		}
	}
	return f, true
}

// parseNumber parses a decimal argument without sign or leading "+".
func parseNumber(a string) (uint64, bool) {
	if a == "" || a[0] < '0' || a[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(a, 10, 64)
	return n, err == nil
}

// capabilities lists CAPA's answer for the session's state (RFC 2449
// section 5): USER and SASL only where plaintext login is allowed, STLS
// only before TLS.
func (s *session) capabilities() []string {
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if s.state == stateAuthorization {
		if s.plaintextAllowed() {
			caps = append(caps, "USER", "SASL PLAIN LOGIN")
		}
		if s.srv.opts.TLSConfig != nil && !s.tls {
			caps = append(caps, "STLS")
		}
	}
	if d := s.srv.opts.ExpireDays; d > 0 {
		caps = append(caps, "EXPIRE "+strconv.Itoa(d))
	}
	if d := s.srv.opts.LoginDelay; d > 0 {
		caps = append(caps, "LOGIN-DELAY "+strconv.Itoa(loginDelaySeconds(d)))
	}
	return append(caps, "IMPLEMENTATION "+s.srv.opts.Implementation)
}

func (s *session) cmdCAPA(args string) error {
	if args != "" {
		return s.badCommand("CAPA takes no arguments")
	}
	s.reply("+OK Capability list follows")
	for _, c := range s.capabilities() {
		s.reply("%s", c)
	}
	s.reply(".")
	return nil
}

// cmdQUIT ends the session; in TRANSACTION it first enters UPDATE (RFC 1939
// section 6) and removes the deleted (and expired) messages.
func (s *session) cmdQUIT(args string) error {
	if args != "" {
		return s.badCommand("QUIT takes no arguments")
	}
	if s.state == stateAuthorization {
		s.reply("+OK Bye")
		return errQuit
	}
	s.state = stateUpdate
	removed, err := s.drop.update(s.ctx, s.srv.opts.ExpireDays, time.Now())
	s.stats.expunged = removed.expunged
	s.stats.expired = removed.expired
	// Store \Seen and release the lock before answering, so a client that
	// reconnects at once is not refused with [IN-USE].
	s.closeMaildrop()
	if err != nil {
		s.log.Error("pop3 QUIT could not remove deleted messages", "err", err)
		s.reply("-ERR [SYS/TEMP] Some deleted messages were not removed, try again later")
		return errQuit
	}
	s.reply("+OK Bye (%d messages removed)", removed.expunged)
	return errQuit
}

func (s *session) cmdNOOP(args string) error {
	if args != "" {
		return s.badCommand("NOOP takes no arguments")
	}
	s.reply("+OK")
	return nil
}
