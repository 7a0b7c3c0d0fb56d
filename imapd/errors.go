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

// errorCodes maps store, auth and system errors to IMAP response codes
// (RFC 5530, and HASCHILDREN from RFC 9051 7.1) for the client. This table
// and fail are the only place where Roost's errors become protocol
// responses; docs/imap.md compares them with Dovecot's. Entries with log
// set are conditions an administrator must see (the client only learns
// that the server cannot do it now).
var errorCodes = []struct {
	err  error
	code imap.ResponseCode
	text string
	log  string
}{
	{err: backend.ErrNoSuchMailbox, code: imap.ResponseCodeNonExistent, text: "Mailbox does not exist"},
	{err: backend.ErrMailboxExists, code: imap.ResponseCodeAlreadyExists, text: "Mailbox already exists"},
	{err: backend.ErrNoSuchMessage, code: "EXPUNGEISSUED", text: "Some of the messages no longer exist"},
	{err: backend.ErrOverQuota, code: imap.ResponseCodeOverQuota, text: "Quota exceeded (mailbox is full)"},
	{err: syscall.EDQUOT, code: imap.ResponseCodeOverQuota, text: "Quota exceeded (disk quota)"},
	{err: backend.ErrLimit, code: imap.ResponseCodeLimit, text: "A limit set by the administrator has been reached"},
	{err: backend.ErrLocked, code: imap.ResponseCodeInUse, text: "Mailbox is in use by another session, try again later"},
	{err: backend.ErrInvalidName, code: imap.ResponseCodeCannot, text: "Invalid mailbox name"},
	{err: syscall.ENAMETOOLONG, code: imap.ResponseCodeCannot, text: "Mailbox name too long"},
	{err: backend.ErrHasChildren, code: imap.ResponseCodeHasChildren, text: "Mailbox has children; delete them first"},
	{err: backend.ErrPermissionDenied, code: imap.ResponseCodeNoPerm, text: "Operation not permitted on this mailbox"},
	{err: auth.ErrUnavailable, code: imap.ResponseCodeUnavailable, text: "Service temporarily unavailable, try again later"},
	{err: auth.ErrInvalidCredentials, code: imap.ResponseCodeAuthenticationFailed, text: "Authentication failed"},
	{err: context.DeadlineExceeded, code: imap.ResponseCodeUnavailable, text: "Operation timed out, try again later",
		log: "timed out"},
	{err: syscall.ENOSPC, code: imap.ResponseCodeUnavailable, text: "Server disk is full; nothing was changed, try again later",
		log: "the mail file system is full"},
	{err: syscall.EROFS, code: imap.ResponseCodeUnavailable, text: "Mail storage is read-only; nothing was changed, try again later",
		log: "the mail file system is read-only"},
	{err: syscall.EMFILE, code: imap.ResponseCodeUnavailable, text: "Server is busy, try again later",
		log: "out of file descriptors (raise LimitNOFILE)"},
	{err: syscall.ENFILE, code: imap.ResponseCodeUnavailable, text: "Server is busy, try again later",
		log: "the system is out of file descriptors"},
	{err: syscall.EIO, code: imap.ResponseCodeUnavailable, text: "Mail storage failed; try again later",
		log: "I/O error on the mail file system"},
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
			if ec.code == imap.ResponseCodeOverQuota {
				s.srv.opts.Metrics.QuotaRejection()
			}
			if ec.log != "" {
				s.log.Error(op+" failed: "+ec.log, "err", err)
			}
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: ec.code, Text: ec.text}
		}
	}
	if errors.Is(err, context.Canceled) {
		// The session is ending (client gone, server shutting down): no
		// one reads this answer, and it is not a server fault.
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Operation cancelled"}
	}
	s.log.Error(op+" failed", "err", err)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug,
		Text: "Internal error at " + time.Now().UTC().Format(time.RFC3339) + "; the administrator can find it in the log"}
}

// errReadOnly answers a change to a mailbox selected with EXAMINE.
var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "READ-ONLY",
	Text: "Mailbox is read-only (selected with EXAMINE)"}
