package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/quota"
)

// Delivery stores one message for one user the way every delivery path
// must (lmtpd, and roostctl deliver as an LDA): the delivery journal's
// check for a retry (journal.go), a quota check with the message's size,
// the chosen folder or INBOX, a durable Append, then the quota warning if
// a threshold was crossed.
type Delivery struct {
	Policy  *quota.Policy
	User    backend.User
	Account backend.Account
	// Folder receives the message if it exists; "" or a missing folder
	// means INBOX (as Dovecot's LDA -m without autocreate).
	Folder string
	// Logger gets journal and warning outcomes; it should carry the user
	// attribute. nil = discard.
	Logger *slog.Logger
}

// Store appends the message made of prefix (header lines the delivery
// adds) and the first size octets of body, and returns where it went. A
// retry of a delivery that was stored but never acknowledged (the process
// died in between) is recognised through the delivery journal and answered
// with the first copy's UID, with dup set, instead of being stored twice.
// An over-quota refusal wraps backend.ErrOverQuota; nothing is stored then.
// A failed quota warning is logged, not returned: the message is safe.
func (d Delivery) Store(ctx context.Context, prefix string, body io.ReaderAt, size int64) (res backend.AppendResult, folder string, dup bool, err error) {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	msg := func() io.Reader { return io.MultiReader(strings.NewReader(prefix), io.NewSectionReader(body, 0, size)) }
	if folder, err = d.folder(ctx); err != nil {
		return res, "", false, err
	}
	key, err := deliveryKey(d.Account.Name, folder, msg())
	if err != nil {
		return res, "", false, fmt.Errorf("read spooled message: %w", err)
	}
	j := journal{root: d.Account.Maildir, uid: d.Account.UID, gid: d.Account.GID}
	last := j.last(key)
	if last != nil && last.done {
		log.Info("duplicate delivery suppressed", "mailbox", last.folder, "uid", last.uid)
		return backend.AppendResult{UID: last.uid, Size: int64(len(prefix)) + size}, last.folder, true, nil
	}
	mb, err := d.User.OpenMailbox(ctx, folder)
	if errors.Is(err, backend.ErrNoSuchMailbox) && folder != "INBOX" {
		// The +detail folder is listed but cannot be opened (removed
		// meanwhile, or refused by the store as unsafe): INBOX, as for a
		// missing folder.
		folder = "INBOX"
		mb, err = d.User.OpenMailbox(ctx, folder)
	}
	if err != nil {
		return res, "", false, fmt.Errorf("open %s: %w", folder, err)
	}
	defer mb.Close()
	if last != nil {
		// An earlier attempt got as far as storing, maybe.
		uid, found, err := findStored(ctx, mb, d.Account.Name, folder, key, last.at)
		if err != nil {
			return res, "", false, fmt.Errorf("look for an interrupted delivery in %s: %w", folder, err)
		}
		if found {
			if err := j.done(key, uid, folder); err != nil {
				log.Warn("delivery journal", "error", err)
			}
			log.Info("interrupted delivery found stored; not storing again", "mailbox", folder, "uid", uid)
			return backend.AppendResult{UID: uid, Size: int64(len(prefix)) + size}, folder, true, nil
		}
	}
	q, err := d.User.Quota(ctx)
	if err != nil {
		return res, "", false, fmt.Errorf("read quota: %w", err)
	}
	if err := d.Policy.Check(q, int64(len(prefix))+size); err != nil {
		return res, "", false, err
	}
	if err := j.pending(key); err != nil {
		// Without the journal a crash could duplicate, not lose, mail.
		log.Warn("delivery journal", "error", err)
	}
	// The store checks the quota again as it stores (with the same grace,
	// given to it by cmd/), which settles races between deliveries.
	if res, err = mb.Append(ctx, msg(), backend.AppendOptions{}); err != nil {
		return res, "", false, fmt.Errorf("store in %s: %w", folder, err)
	}
	if err := j.done(key, res.UID, folder); err != nil {
		log.Warn("delivery journal", "error", err)
	}
	if _, err := d.Policy.Warn(ctx, d.User, d.Account); err != nil {
		log.Warn("quota warning failed", "error", err)
	}
	return res, folder, false, nil
}

func (d Delivery) folder(ctx context.Context) (string, error) {
	if d.Folder == "" || d.Folder == "INBOX" {
		return "INBOX", nil
	}
	boxes, err := d.User.ListMailboxes(ctx)
	if err != nil {
		return "", fmt.Errorf("list folders: %w", err)
	}
	for _, b := range boxes {
		if !b.NoSelect && b.Name == d.Folder {
			return b.Name, nil
		}
	}
	return "INBOX", nil
}
