package imapd

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// errorCodes maps store and auth errors to IMAP response codes (RFC 5530)
// for the client. This table and fail are the only place where Roost's
// errors become protocol responses.
var errorCodes = []struct {
	err  error
	code imap.ResponseCode
	text string
}{
	{backend.ErrNoSuchMailbox, imap.ResponseCodeNonExistent, "Mailbox does not exist"},
	{backend.ErrMailboxExists, imap.ResponseCodeAlreadyExists, "Mailbox already exists"},
	{backend.ErrNoSuchMessage, "EXPUNGEISSUED", "Some of the messages no longer exist"},
	{backend.ErrOverQuota, imap.ResponseCodeOverQuota, "Quota exceeded (mailbox is full)"},
	{syscall.EDQUOT, imap.ResponseCodeOverQuota, "Quota exceeded (disk quota)"},
	{backend.ErrLocked, imap.ResponseCodeInUse, "Mailbox is in use by another session, try again later"},
	{backend.ErrInvalidName, imap.ResponseCodeCannot, "Invalid mailbox name"},
	{backend.ErrHasChildren, imap.ResponseCodeHasChildren, "Mailbox has children; delete them first"},
	{backend.ErrPermissionDenied, imap.ResponseCodeNoPerm, "Operation not permitted on this mailbox"},
	{auth.ErrUnavailable, imap.ResponseCodeUnavailable, "Service temporarily unavailable, try again later"},
	{auth.ErrInvalidCredentials, imap.ResponseCodeAuthenticationFailed, "Authentication failed"},
}

// fail turns err from operation op into the response the client sees.
// Expected conditions keep their own code; anything else is logged with
// op and shown as a server error, and nothing about it leaks to the client.
func (s *session) fail(op string, err error) error {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie
	}
	for _, ec := range errorCodes {
		if errors.Is(err, ec.err) {
			if ec.err == backend.ErrOverQuota || ec.err == syscall.EDQUOT {
				s.srv.opts.Metrics.QuotaRejection()
			}
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: ec.code, Text: ec.text}
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC):
		s.log.Error(op+" failed: the mail file system is full", "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
			Text: "Server disk is full; nothing was changed, try again later"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Operation timed out, try again"}
	}
	s.log.Error(op+" failed", "err", err)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
		Text: "Internal error at " + time.Now().UTC().Format(time.RFC3339) + "; the administrator can find it in the log"}
}

// errReadOnly answers a change to a mailbox selected with EXAMINE.
var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "READ-ONLY",
	Text: "Mailbox is read-only (selected with EXAMINE)"}
