package imapd

import (
	"fmt"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/backend"
)

// Sizes the store has not measured yet. A store may report Message.Size -1
// for a message whose file another program wrote (Postfix) until it gets
// round to reading it, so that the first SELECT of a big mailbox does not
// read every file. A command that needs such a size asks
// Mailbox.MessageSize, once per message, and keeps the answer in its own
// data: the snapshot is shared between sessions and never written to.
// Items that do not need the size (FLAGS, ENVELOPE, BODY[HEADER], parts)
// never ask.

// messageSize returns the CRLF size of m: the snapshot's, or the store's
// measure if the snapshot has none yet. It fails with
// backend.ErrNoSuchMessage if the message was expunged meanwhile.
func (s *session) messageSize(m *backend.Message) (int64, error) {
	if m.Size >= 0 {
		return m.Size, nil
	}
	n, err := s.sel.st.mbox.MessageSize(s.ctx, m.UID)
	if err != nil {
		return 0, fmt.Errorf("measure message %d: %w", m.UID, err)
	}
	return n, nil
}

// fetchNeedsSize reports whether a FETCH needs each message's size:
// RFC822.SIZE (and the FAST, ALL and FULL macros), and the sections that
// end where the message ends: BODY[] and BODY[TEXT] (RFC822,
// RFC822.TEXT), BINARY[] and BINARY.SIZE[] (RFC 3516), partial or not.
// Sections of a part end where the MIME parser found the part's end, and
// BODY[HEADER] where the header ends.
func fetchNeedsSize(opts *imap.FetchOptions) bool {
	if opts.RFC822Size {
		return true
	}
	for _, bs := range opts.BodySection {
		if len(bs.Part) == 0 && (bs.Specifier == imap.PartSpecifierNone || bs.Specifier == imap.PartSpecifierText) {
			return true
		}
	}
	for _, bs := range opts.BinarySection {
		if len(bs.Part) == 0 {
			return true
		}
	}
	for _, bs := range opts.BinarySectionSize {
		if len(bs.Part) == 0 {
			return true
		}
	}
	return false
}
