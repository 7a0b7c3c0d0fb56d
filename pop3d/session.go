package pop3d

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"github.com/roost-mail/roost/netguard"
)

// state is the RFC 1939 session state.
type state uint8

const (
	stateAuthorization state = 1 << iota
	stateTransaction
	stateUpdate
)

func (st state) String() string {
	switch st {
	case stateAuthorization:
		return "AUTHORIZATION"
	case stateTransaction:
		return "TRANSACTION"
	case stateUpdate:
		return "UPDATE"
	}
	return fmt.Sprintf("state(%d)", uint8(st))
}

const (
	// maxCommandLine is RFC 2449 section 4's limit, CRLF included.
	maxCommandLine = 255
	// maxAuthLine bounds an AUTH command with an initial response and a
	// SASL response line: RFC 5034 lets these exceed 255 octets.
	maxAuthLine = 4096
	// maxBadCommands ends a session that keeps sending garbage (such as an
	// HTTP request sent to the POP3 port).
	maxBadCommands = 10
	// maxAuthFailures ends a session after this many failed logins.
	maxAuthFailures = 5
	// handshakeTimeout bounds a TLS handshake.
	handshakeTimeout = 30 * time.Second
)

var (
	errLineTooLong = errors.New("line too long")
	// errQuit ends a session normally after QUIT's reply.
	errQuit = errors.New("quit")
)

// session is one client connection.
type session struct {
	srv    *Server
	ctx    context.Context
	id     uint64
	wire   *wireConn
	conn   net.Conn // wire, or a *tls.Conn over it after STLS
	br     *bufio.Reader
	bw     *bufio.Writer
	remote netip.Addr
	log    *slog.Logger

	state       state
	tls         bool
	secure      bool   // TLS, or secure by Options.IsSecure
	timestamp   string // APOP timestamp from the greeting; "" if APOP is off
	pendingUser string // name given by USER, waiting for PASS
	user        string // authenticated user name
	badCommands int
	authFails   int
	drop        *maildrop // nil until TRANSACTION

	stats sessionStats
}

// sessionStats are the counts in the session's log line.
type sessionStats struct {
	retr, top, dele, expired, expunged int
	retrBytes                          int64
	end                                string
}

func newSession(srv *Server, wc *wireConn) *session {
	s := &session{
		srv:    srv,
		ctx:    srv.ctx,
		id:     srv.nextID.Add(1),
		wire:   wc,
		conn:   wc,
		remote: netguard.RemoteAddr(wc.Conn),
		state:  stateAuthorization,
	}
	_, s.tls = wc.Conn.(*tls.Conn)
	s.secure = s.tls || srv.opts.IsSecure(wc.Conn)
	s.br = bufio.NewReaderSize(s.conn, maxAuthLine)
	s.bw = bufio.NewWriterSize(s.conn, 4<<10)
	s.log = srv.log.With("conn", s.id, "remote", s.remote.String())
	return s
}

func (s *session) run() {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("pop3 session panic", "panic", r, "stack", string(debug.Stack()))
			s.stats.end = "panic"
		}
		if s.drop != nil {
			s.closeMaildrop()
		}
		s.srv.opts.Metrics.Bytes(s.wire.in.Load(), s.wire.out.Load())
		s.log.Info("pop3 session", "tls", s.tls, "end", s.stats.end,
			"duration", time.Since(start).Round(time.Millisecond),
			"retr", s.stats.retr, "retr_bytes", s.stats.retrBytes, "top", s.stats.top,
			"dele", s.stats.dele, "expired", s.stats.expired, "expunged", s.stats.expunged,
			"bytes_in", s.wire.in.Load(), "bytes_out", s.wire.out.Load())
	}()
	s.stats.end = "disconnect"
	if tc, ok := s.wire.Conn.(*tls.Conn); ok {
		// Implicit TLS: the handshake reads before any deadline of ours
		// would apply, so bound it here (a silent client must not hold a
		// connection open).
		ctx, cancel := context.WithTimeout(s.ctx, min(s.srv.opts.IdleTimeout, handshakeTimeout))
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.stats.end = "tls-handshake"
			s.log.Debug("pop3 TLS handshake failed", "err", err)
			return
		}
	}
	if s.srv.apop != nil {
		s.timestamp = newTimestamp(s.srv.opts.Hostname)
		s.reply("+OK %s POP3 server ready %s", s.srv.opts.Hostname, s.timestamp)
	} else {
		s.reply("+OK %s POP3 server ready", s.srv.opts.Hostname)
	}
	if s.flush() != nil {
		return
	}
	for {
		line, err := s.readLine(maxAuthLine)
		if err != nil && !errors.Is(err, errLineTooLong) {
			s.endOnReadError(err)
			return
		}
		err = s.dispatch(line, err)
		if s.br.Buffered() == 0 || err != nil {
			// PIPELINING (RFC 2449 6.6): answers to pipelined commands
			// go out together.
			if ferr := s.flush(); ferr != nil && err == nil {
				err = ferr
			}
		}
		if errors.Is(err, errQuit) {
			s.stats.end = "quit"
			return
		}
		if err != nil {
			if s.stats.end == "disconnect" {
				s.log.Debug("pop3 session ends", "err", err)
			}
			return
		}
	}
}

// endOnReadError says goodbye when the server shuts down or the client was
// idle too long; a closed connection just ends.
func (s *session) endOnReadError(err error) {
	switch {
	case s.srv.closing.Load():
		s.stats.end = "shutdown"
		s.reply("-ERR [SYS/TEMP] Server shutting down, try again shortly")
	case s.wire.timedOut.Load():
		s.stats.end = "timeout"
		s.reply("-ERR Disconnected for inactivity")
	case errors.Is(err, io.EOF):
		return
	default:
		s.log.Debug("pop3 read failed", "err", err)
		return
	}
	s.flush()
}

// readLine reads one line of at most max octets including the line end and
// returns it without CRLF. A longer line is discarded as it arrives (never
// buffered whole) and reported as errLineTooLong.
func (s *session) readLine(max int) (string, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := s.br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		break
	}
	if tooLong {
		return "", errLineTooLong
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// reply writes one response line; errors surface at flush.
func (s *session) reply(format string, args ...any) {
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

func (s *session) flush() error {
	return s.bw.Flush()
}

// bulkBuffers are the large buffers of one long response (RETR, TOP, a LIST
// or UIDL of every message). They are pooled in the Server, so an idle
// session holds only its 4 KiB reader and writer.
type bulkBuffers struct {
	w  *wireBuffer // 256 KiB: few, large socket writes
	in []byte      // 128 KiB: reads from the message file
}

func newBulkBuffers() any {
	return &bulkBuffers{w: newWireBuffer(256 << 10), in: make([]byte, 128<<10)}
}

// bulk runs fn with the large buffers. Replies already queued go out
// first; everything fn wrote is flushed when it returns. Errors writing
// to the client are *writeError.
func (s *session) bulk(fn func(w *wireBuffer, in []byte) error) error {
	if err := s.bw.Flush(); err != nil {
		return &writeError{err}
	}
	b := s.srv.bulk.Get().(*bulkBuffers)
	b.w.reset(s.conn)
	err := fn(b.w, b.in)
	if ferr := b.w.Flush(); err == nil {
		err = ferr
	}
	b.w.reset(nil)
	s.srv.bulk.Put(b)
	return err
}

// startTLS switches the connection to TLS after "+OK" was flushed (RFC 2595
// section 4); the session's buffers now read and write through TLS.
func (s *session) startTLS() error {
	tc := tls.Server(s.wire, s.srv.opts.TLSConfig)
	ctx, cancel := context.WithTimeout(s.ctx, min(s.srv.opts.IdleTimeout, handshakeTimeout))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Info("pop3 STLS handshake failed", "err", err)
		return fmt.Errorf("TLS handshake: %w", err)
	}
	s.conn, s.tls, s.secure = tc, true, true
	s.br.Reset(tc)
	s.bw.Reset(tc)
	return nil
}

// closeMaildrop ends TRANSACTION without UPDATE (or after it): \Seen flags
// are stored, the lock released.
func (s *session) closeMaildrop() {
	// Use a fresh context: a server Close should not stop \Seen updates
	// for messages the client already has.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.drop.close(ctx); err != nil {
		s.log.Warn("pop3 maildrop close failed", "err", err)
	}
	s.drop = nil
}

// badCommand answers a command error and counts it.
func (s *session) badCommand(msg string) error {
	s.badCommands++
	s.reply("-ERR %s", msg)
	if s.badCommands >= maxBadCommands {
		s.reply("-ERR Too many bad commands, closing connection")
		s.stats.end = "bad-commands"
		return errors.New("too many bad commands")
	}
	return nil
}

// visible replaces control characters so client input is safe in replies and logs.
func visible(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
