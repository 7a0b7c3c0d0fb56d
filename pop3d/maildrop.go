package pop3d

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/roost-mail/roost/backend"
)

// maildrop is the session's view of INBOX: the snapshot taken at login, the
// messages marked deleted, and those sent in full by RETR. Message n is
// msgs[n-1] for the whole session.
type maildrop struct {
	user     backend.User
	mbox     backend.Mailbox
	release  func() error
	uidv     uint32
	msgs     []backend.Message // in POP3 order (pop3Order), sizes measured; immutable
	deleted  []bool
	sent     []bool // RETR completed: to be marked \Seen
	markSeen bool
	updated  bool  // UPDATE expunged the deleted messages
	count    int   // messages not deleted
	size     int64 // their total size
}

// newMaildrop makes the maildrop of snap. It fails only if the store
// cannot say the size of a message it has not measured yet.
func newMaildrop(ctx context.Context, u backend.User, mbox backend.Mailbox, release func() error, snap *backend.Snapshot, markSeen bool) (*maildrop, error) {
	msgs := pop3Order(snap.Messages())
	size, known := totalSize(msgs)
	if !known {
		var err error
		if msgs, err = measure(ctx, mbox, msgs); err != nil {
			return nil, err
		}
		size, _ = totalSize(msgs)
	}
	return &maildrop{
		user: u, mbox: mbox, release: release, uidv: snap.UIDValidity,
		msgs:    msgs,
		deleted: make([]bool, len(msgs)),
		sent:    make([]bool, len(msgs)),
		count:   len(msgs), size: size, markSeen: markSeen,
	}, nil
}

// totalSize sums the sizes of msgs and says whether every one is known.
func totalSize(msgs []backend.Message) (size int64, known bool) {
	known = true
	for i := range msgs {
		if msgs[i].Size < 0 {
			known = false
		}
		size += msgs[i].Size
	}
	return size, known
}

// measure returns msgs with every size known. STAT, LIST and RETR promise
// exact octet counts (RFC 1939 section 11) for the whole session, so a size
// the store has not measured yet (Message.Size -1: a file Postfix wrote
// that the store has not read) is asked of Mailbox.MessageSize now, at
// login. A message expunged meanwhile is left out, as if the snapshot had
// been taken a moment later. msgs, which may be the store's snapshot, is
// not modified.
func measure(ctx context.Context, mbox backend.Mailbox, msgs []backend.Message) ([]backend.Message, error) {
	out := make([]backend.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Size < 0 {
			if err := ctx.Err(); err != nil {
				return nil, err // shutting down: a big maildrop stops here
			}
			n, err := mbox.MessageSize(ctx, m.UID)
			if errors.Is(err, backend.ErrNoSuchMessage) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("measure message %d: %w", m.UID, err)
			}
			m.Size = n
		}
		out = append(out, m)
	}
	return out, nil
}

// pop3Order returns msgs (sorted by UID) in POP3 order, as Dovecot lists
// them: messages with a POP3Order (their place in the listing of the
// server they were migrated from) first, by that order, then the others,
// by UID. A migrated user's message n is then the old server's message n,
// which clients that track messages by number rather than by UIDL need.
// msgs is not modified: it belongs to the store's snapshot.
func pop3Order(msgs []backend.Message) []backend.Message {
	// One uint64 per message, the order above its index (its place in
	// UID order): sorting these is far quicker than sorting Messages.
	var keys []uint64
	for i := range msgs {
		if msgs[i].POP3Order != 0 && keys == nil {
			keys = make([]uint64, len(msgs))
			for j := range i {
				keys[j] = math.MaxUint32<<32 | uint64(j)
			}
		}
		if keys != nil {
			order := uint64(msgs[i].POP3Order)
			if order == 0 {
				order = math.MaxUint32 // as Dovecot: after every real order
			}
			keys[i] = order<<32 | uint64(i)
		}
	}
	if keys == nil {
		return msgs
	}
	slices.Sort(keys)
	sorted := make([]backend.Message, len(msgs))
	for j, k := range keys {
		sorted[j] = msgs[uint32(k)]
	}
	return sorted
}

// errNoMessage is the reply text for a bad or deleted message number.
var errNoMessage = errors.New("no such message")

// message returns the index of message number arg, which must exist and not
// be deleted (RFC 1939 section 5).
func (d *maildrop) message(arg string) (int, error) {
	n, ok := parseNumber(arg)
	if !ok {
		return 0, fmt.Errorf("invalid message number %q", visible(arg))
	}
	if n == 0 || n > uint64(len(d.msgs)) {
		return 0, fmt.Errorf("%w, only %d messages in maildrop", errNoMessage, len(d.msgs))
	}
	i := int(n - 1)
	if d.deleted[i] {
		return 0, fmt.Errorf("message %d already deleted", n)
	}
	return i, nil
}

func (d *maildrop) dele(i int) {
	d.deleted[i] = true
	d.count--
	d.size -= d.msgs[i].Size
}

func (d *maildrop) reset() {
	for i := range d.deleted {
		d.deleted[i] = false
	}
	d.count = len(d.msgs)
	d.size = 0
	for i := range d.msgs {
		d.size += d.msgs[i].Size
	}
}

// updateResult counts what UPDATE removed.
type updateResult struct {
	expunged int // messages removed, deleted and expired together
	expired  int // of which removed by EXPIRE, not DELE
}

// update is the UPDATE state (RFC 1939 section 6): it expunges the messages
// marked deleted and, with EXPIRE, the expired ones: those retrieved (\Seen
// at login, or sent in full by RETR in this session) whose internal date is
// expireDays*24h or more before now.
func (d *maildrop) update(ctx context.Context, expireDays int, now time.Time) (updateResult, error) {
	var uids []backend.UID
	var res updateResult
	cutoff := now.Add(-time.Duration(expireDays) * 24 * time.Hour)
	for i := range d.msgs {
		m := &d.msgs[i]
		switch {
		case d.deleted[i]:
			uids = append(uids, m.UID)
		case expireDays > 0 && (m.Flags&backend.FlagSeen != 0 || d.sent[i]) && !m.InternalDate.After(cutoff):
			uids = append(uids, m.UID)
			res.expired++
		}
	}
	if len(uids) == 0 {
		return res, nil
	}
	slices.Sort(uids) // the store's order, whatever the POP3 order was
	removed, err := d.mbox.Expunge(ctx, uids)
	res.expunged = len(removed)
	if err != nil {
		return res, fmt.Errorf("expunge %d messages: %w", len(uids), err)
	}
	d.updated = true
	// Messages another session already expunged are gone too: fine.
	return res, nil
}

// close stores \Seen for messages sent in full (without UPDATE, deleted
// ones too: they stay), then releases the mailbox and the lock.
func (d *maildrop) close(ctx context.Context) error {
	var errs []error
	if d.markSeen {
		var uids []backend.UID
		for i := range d.msgs {
			if d.sent[i] && !(d.updated && d.deleted[i]) && d.msgs[i].Flags&backend.FlagSeen == 0 {
				uids = append(uids, d.msgs[i].UID)
			}
		}
		if len(uids) > 0 {
			slices.Sort(uids)
			if _, err := d.mbox.SetFlags(ctx, uids, backend.FlagsAdd, backend.FlagSeen, nil); err != nil {
				errs = append(errs, fmt.Errorf("mark %d messages \\Seen: %w", len(uids), err))
			}
		}
	}
	if err := d.mbox.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := d.release(); err != nil {
		errs = append(errs, fmt.Errorf("release pop3 lock: %w", err))
	}
	if err := d.user.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
