package pop3d

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/roost-mail/roost/backend"
)

// Handlers of the TRANSACTION state (RFC 1939 section 5, RFC 2449 TOP/UIDL).

func (s *session) cmdSTAT(args string) error {
	if args != "" {
		return s.badCommand("STAT takes no arguments")
	}
	s.reply("+OK %d %d", s.drop.count, s.drop.size)
	return nil
}

// noSuchMessage answers a bad message-number argument.
func (s *session) noSuchMessage(err error) error {
	s.reply("-ERR %s", err.Error())
	return nil
}

func (s *session) cmdLIST(args string) error {
	return s.listing(args, "LIST", func(buf []byte, i int) []byte {
		return strconv.AppendInt(buf, s.drop.msgs[i].Size, 10)
	})
}

func (s *session) cmdUIDL(args string) error {
	return s.listing(args, "UIDL", func(buf []byte, i int) []byte {
		return s.srv.uidl.append(buf, &s.drop.msgs[i], s.drop.uidv)
	})
}

// listing answers LIST and UIDL: one message with an argument, else every
// message not deleted, as a multi-line response.
func (s *session) listing(args, name string, value func(buf []byte, i int) []byte) error {
	f, ok := splitArgs(args, 0, 1)
	if !ok {
		return s.badCommand("Usage: " + name + " [message]")
	}
	d := s.drop
	if len(f) == 1 {
		i, err := d.message(f[0])
		if err != nil {
			return s.noSuchMessage(err)
		}
		buf := append([]byte("+OK "), strconv.Itoa(i+1)...)
		buf = value(append(buf, ' '), i)
		s.bw.Write(append(buf, "\r\n"...))
		return nil
	}
	return s.bulk(func(w *wireBuffer, buf []byte) error {
		if name == "LIST" {
			fmt.Fprintf(w, "+OK %d messages (%d octets)\r\n", d.count, d.size)
		} else {
			w.WriteString("+OK\r\n")
		}
		for i := range d.msgs {
			if d.deleted[i] {
				continue
			}
			buf = strconv.AppendInt(buf[:0], int64(i+1), 10)
			buf = append(value(append(buf, ' '), i), "\r\n"...)
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		_, err := w.WriteString(".\r\n")
		return err
	})
}

func (s *session) cmdDELE(args string) error {
	f, ok := splitArgs(args, 1, 1)
	if !ok {
		return s.badCommand("Usage: DELE message")
	}
	i, err := s.drop.message(f[0])
	if err != nil {
		return s.noSuchMessage(err)
	}
	s.drop.dele(i)
	s.stats.dele++
	s.reply("+OK Message %d deleted", i+1)
	return nil
}

func (s *session) cmdRSET(args string) error {
	if args != "" {
		return s.badCommand("RSET takes no arguments")
	}
	s.drop.reset()
	s.stats.dele = 0
	s.reply("+OK %d messages (%d octets)", s.drop.count, s.drop.size)
	return nil
}

func (s *session) cmdRETR(args string) error {
	f, ok := splitArgs(args, 1, 1)
	if !ok {
		return s.badCommand("Usage: RETR message")
	}
	i, err := s.drop.message(f[0])
	if err != nil {
		return s.noSuchMessage(err)
	}
	n, sent, err := s.sendMessage(i, -1)
	if err != nil || !sent {
		return err
	}
	// bulk flushed it: only a message that left in full is marked \Seen.
	s.drop.sent[i] = true
	s.stats.retr++
	s.stats.retrBytes += n
	return nil
}

// cmdTOP sends the header, the blank line and the first n body lines
// (RFC 1939 section 7). It does not count as retrieval: no \Seen.
func (s *session) cmdTOP(args string) error {
	f, ok := splitArgs(args, 2, 2)
	if !ok {
		return s.badCommand("Usage: TOP message lines")
	}
	i, err := s.drop.message(f[0])
	if err != nil {
		return s.noSuchMessage(err)
	}
	lines, ok := parseNumber(f[1])
	if !ok {
		return s.badCommand("Invalid number of lines")
	}
	_, sent, err := s.sendMessage(i, int64(min(lines, 1<<62)))
	if sent {
		s.stats.top++
	}
	return err
}

// sendMessage streams message i dot-stuffed: all of it (lines < 0) or its
// header and first lines body lines. An error while streaming ends the
// session without the final "." so the client cannot take a truncated
// message for a whole one.
func (s *session) sendMessage(i int, lines int64) (n int64, sent bool, err error) {
	m := &s.drop.msgs[i]
	open := s.drop.mbox.OpenMessage
	if raw, ok := s.drop.mbox.(rawMessageOpener); ok && lines < 0 {
		open = raw.OpenRawMessage
	}
	r, err := open(s.ctx, m.UID)
	if errors.Is(err, backend.ErrNoSuchMessage) {
		s.reply("-ERR Message %d was removed by another session", i+1)
		return 0, false, nil
	}
	if err != nil {
		s.log.Error("pop3 cannot open message", "uid", m.UID, "err", err)
		s.reply("-ERR [SYS/TEMP] Cannot read message %d, try again later", i+1)
		return 0, false, nil
	}
	defer r.Close()
	err = s.bulk(func(w *wireBuffer, buf []byte) error {
		var err error
		if lines < 0 {
			fmt.Fprintf(w, "+OK %d octets\r\n", m.Size)
			n, err = copyMessage(w, r, buf, m.Size)
		} else {
			w.WriteString("+OK\r\n")
			n, err = copyTop(w, r, lines)
		}
		return err
	})
	if err != nil {
		var we *writeError
		if !errors.As(err, &we) {
			s.log.Error("pop3 message read failed mid-transfer; closing connection", "uid", m.UID, "err", err)
			s.stats.end = "store-error"
		}
		return n, false, fmt.Errorf("send message %d: %w", i+1, err)
	}
	return n, true, nil
}

// rawMessageOpener is an optional interface of a backend.Mailbox whose
// message files may have bare LF line ends (Maildir, as Postfix writes
// them): OpenRawMessage streams a message as stored, without converting it
// to CRLF. RETR then converts while dot-stuffing (copyMessage), in one
// pass instead of the store's reader converting and pop3d scanning again.
type rawMessageOpener interface {
	OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error)
}

// writeError marks a failure writing to the client, as opposed to reading
// the message from the store.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }
