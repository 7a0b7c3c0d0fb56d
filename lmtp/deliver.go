package lmtp

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/quota"
)

// Delivery stores one message for one user the way every delivery path
// must (lmtpd, and roostctl deliver as an LDA): quota check with the
// message's size, the chosen folder or INBOX, a durable Append, then the
// quota warning if a threshold was crossed.
type Delivery struct {
	Policy  *quota.Policy
	User    backend.User
	Account backend.Account
	// Folder receives the message if it exists; "" or a missing folder
	// means INBOX (as Dovecot's LDA -m without autocreate).
	Folder string
	// Logger gets the warning outcome; nil = discard.
	Logger *slog.Logger
}

// Store appends msg (size octets as it will be stored) and returns where it
// went. An over-quota refusal wraps backend.ErrOverQuota; nothing is stored
// then. A failed quota warning is logged, not returned: the message is safe.
func (d Delivery) Store(ctx context.Context, msg io.Reader, size int64) (backend.AppendResult, string, error) {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q, err := d.User.Quota(ctx)
	if err != nil {
		return backend.AppendResult{}, "", fmt.Errorf("read quota: %w", err)
	}
	if err := d.Policy.Check(q, size); err != nil {
		return backend.AppendResult{}, "", err
	}
	folder, err := d.folder(ctx)
	if err != nil {
		return backend.AppendResult{}, "", err
	}
	mb, err := d.User.OpenMailbox(ctx, folder)
	if err != nil {
		return backend.AppendResult{}, "", fmt.Errorf("open %s: %w", folder, err)
	}
	defer mb.Close()
	// The store checks the quota again as it stores (with the same grace,
	// given to it by cmd/), which settles races between deliveries.
	res, err := mb.Append(ctx, msg, backend.AppendOptions{})
	if err != nil {
		return backend.AppendResult{}, "", fmt.Errorf("store in %s: %w", folder, err)
	}
	if _, err := d.Policy.Warn(ctx, d.User, d.Account); err != nil {
		log.Warn("quota warning failed", "user", d.Account.Name, "error", err)
	}
	return res, folder, nil
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
