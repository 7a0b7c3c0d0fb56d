package storetest

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/roost-mail/roost/backend"
)

// SizeHider wraps a backend.Store so that a front end's tests can choose
// which message sizes the store seems to know, as if its background
// measurer had not reached some messages yet (a Maildir as Postfix writes
// it: no size in the file names). In snapshots and SetFlags answers the
// messages Hide picks (every message if Hide is nil) report Size -1,
// whatever the store knows; every other size is known, measured first if
// the store has not yet. The front end must then ask MessageSize, which
// passes to the wrapped store, counted in Calls; Before, if set, runs
// first (to expunge the message, as another session could), and an error
// it returns is MessageSize's. Statuses counts Mailbox.Status calls, which
// sum exact sizes.
//
// A mailbox with the optional OpenRawMessage (maildir's) keeps it, so a
// front end that finds it by type assertion takes the same path as over
// the bare store; a mailbox without it does not gain it.
//
// Set Store before the first Open, and Hide and Before when no session
// can be reading them.
type SizeHider struct {
	backend.Store
	Hide     func(backend.Message) bool
	Before   func(mb backend.Mailbox, uid backend.UID) error
	Calls    atomic.Int64 // MessageSize calls
	Statuses atomic.Int64 // Mailbox.Status calls
}

type sizeHiderUser struct {
	backend.User
	h *SizeHider
}

type sizeHiderMailbox struct {
	backend.Mailbox
	h *SizeHider

	mu        sync.Mutex
	real, out *backend.Snapshot // the last snapshot converted, and its conversion
}

// sizeHiderRawMailbox is a sizeHiderMailbox over a mailbox that has
// OpenRawMessage.
type sizeHiderRawMailbox struct {
	*sizeHiderMailbox
}

// rawOpener is the optional OpenRawMessage of maildir's mailboxes, which
// pop3d's RETR finds by type assertion.
type rawOpener interface {
	OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error)
}

// Open opens acct on the wrapped store; its mailboxes hide sizes.
func (h *SizeHider) Open(ctx context.Context, acct backend.Account) (backend.User, error) {
	u, err := h.Store.Open(ctx, acct)
	if err != nil {
		return nil, err
	}
	return sizeHiderUser{u, h}, nil
}

func (u sizeHiderUser) OpenMailbox(ctx context.Context, name string) (backend.Mailbox, error) {
	mb, err := u.User.OpenMailbox(ctx, name)
	if err != nil {
		return nil, err
	}
	hmb := &sizeHiderMailbox{Mailbox: mb, h: u.h}
	if _, ok := mb.(rawOpener); ok {
		return sizeHiderRawMailbox{hmb}, nil
	}
	return hmb, nil
}

func (mb *sizeHiderMailbox) convert(ctx context.Context, msgs []backend.Message) ([]backend.Message, error) {
	out := make([]backend.Message, len(msgs))
	for i, m := range msgs {
		switch {
		case mb.h.Hide == nil || mb.h.Hide(m):
			m.Size = -1
		case m.Size < 0:
			n, err := mb.Mailbox.MessageSize(ctx, m.UID)
			if err != nil {
				return nil, err
			}
			m.Size = n
		}
		out[i] = m
	}
	return out, nil
}

// Sync returns the same converted snapshot for the same real one, as a
// store does when nothing changed (imapd compares snapshot pointers).
func (mb *sizeHiderMailbox) Sync(ctx context.Context) (*backend.Snapshot, error) {
	snap, err := mb.Mailbox.Sync(ctx)
	if err != nil {
		return nil, err
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if snap != mb.real {
		msgs, err := mb.convert(ctx, snap.Messages())
		if err != nil {
			return nil, err
		}
		mb.real, mb.out = snap, backend.NewSnapshot(snap.UIDValidity, snap.UIDNext, msgs, snap.Changed)
	}
	return mb.out, nil
}

func (mb *sizeHiderMailbox) SetFlags(ctx context.Context, uids []backend.UID, op backend.FlagOp, flags backend.Flags, kws []string) ([]backend.Message, error) {
	msgs, err := mb.Mailbox.SetFlags(ctx, uids, op, flags, kws)
	if err != nil {
		return nil, err
	}
	return mb.convert(ctx, msgs)
}

func (mb *sizeHiderMailbox) Status(ctx context.Context) (backend.Status, error) {
	mb.h.Statuses.Add(1)
	return mb.Mailbox.Status(ctx)
}

func (mb *sizeHiderMailbox) MessageSize(ctx context.Context, uid backend.UID) (int64, error) {
	mb.h.Calls.Add(1)
	if mb.h.Before != nil {
		if err := mb.h.Before(mb.Mailbox, uid); err != nil {
			return 0, err
		}
	}
	return mb.Mailbox.MessageSize(ctx, uid)
}

func (mb sizeHiderRawMailbox) OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error) {
	return mb.Mailbox.(rawOpener).OpenRawMessage(ctx, uid)
}
