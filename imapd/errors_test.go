package imapd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
)

// TestFailCodes checks the translation of every error the store, auth and
// the system give into the response a client sees, wrapped as the store
// wraps them, and which of them an administrator finds in the log.
func TestFailCodes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("maildir: alice: %w", err) }
	pathErr := func(errno syscall.Errno) error {
		return wrap(&fs.PathError{Op: "open", Path: "/var/vmail/alice/Maildir/tmp/x", Err: errno})
	}
	for _, tc := range []struct {
		name   string
		err    error
		status imap.StatusResponseType
		code   imap.ResponseCode
		logged bool
	}{
		{"no such mailbox", wrap(backend.ErrNoSuchMailbox), imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent, false},
		{"mailbox exists", wrap(backend.ErrMailboxExists), imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists, false},
		{"no such message", wrap(backend.ErrNoSuchMessage), imap.StatusResponseTypeNo, "EXPUNGEISSUED", false},
		{"over quota", wrap(backend.ErrOverQuota), imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota, false},
		{"disk quota", pathErr(syscall.EDQUOT), imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota, false},
		{"limit", wrap(backend.ErrLimit), imap.StatusResponseTypeNo, imap.ResponseCodeLimit, false},
		{"locked", wrap(backend.ErrLocked), imap.StatusResponseTypeNo, imap.ResponseCodeInUse, false},
		{"invalid name", wrap(backend.ErrInvalidName), imap.StatusResponseTypeNo, imap.ResponseCodeCannot, false},
		{"name too long", pathErr(syscall.ENAMETOOLONG), imap.StatusResponseTypeNo, imap.ResponseCodeCannot, false},
		{"has children", wrap(backend.ErrHasChildren), imap.StatusResponseTypeNo, imap.ResponseCodeHasChildren, false},
		{"permission", wrap(backend.ErrPermissionDenied), imap.StatusResponseTypeNo, imap.ResponseCodeNoPerm, false},
		{"auth down", fmt.Errorf("ldap: %w", auth.ErrUnavailable), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, false},
		{"bad password", auth.ErrInvalidCredentials, imap.StatusResponseTypeNo, imap.ResponseCodeAuthenticationFailed, false},
		{"deadline", wrap(context.DeadlineExceeded), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"disk full", pathErr(syscall.ENOSPC), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"read-only fs", pathErr(syscall.EROFS), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"out of fds", pathErr(syscall.EMFILE), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"system out of fds", pathErr(syscall.ENFILE), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"i/o error", pathErr(syscall.EIO), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, true},
		{"session ending", wrap(context.Canceled), imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, false},
		// Dovecot too answers an unexpected permission problem on disk
		// with SERVERBUG and logs it: it is the administrator's to fix.
		{"file permission", pathErr(syscall.EACCES), imap.StatusResponseTypeNo, imap.ResponseCodeServerBug, true},
		{"anything else", errors.New("uidlist: line 3: bad record"), imap.StatusResponseTypeNo, imap.ResponseCodeServerBug, true},
		{"protocol error passes", &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: "x"},
			imap.StatusResponseTypeBad, imap.ResponseCodeClientBug, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testenv.LogBuffer{}
			s := &session{srv: &Server{}, log: slog.New(slog.NewTextHandler(logs, nil))}
			err := s.fail("test op", tc.err)
			var ie *imap.Error
			if !errors.As(err, &ie) {
				t.Fatalf("fail returned %T %v, want *imap.Error", err, err)
			}
			if ie.Type != tc.status || ie.Code != tc.code {
				t.Errorf("got %s [%s] %s, want %s [%s]", ie.Type, ie.Code, ie.Text, tc.status, tc.code)
			}
			if ie.Text == "" {
				t.Error("empty response text")
			}
			if tc.err != nil && strings.Contains(ie.Text, "/var/vmail") {
				t.Errorf("response text %q leaks a path", ie.Text)
			}
			if got := strings.Contains(logs.String(), "test op failed"); got != tc.logged {
				t.Errorf("logged = %v, want %v; log: %s", got, tc.logged, logs.String())
			}
			if tc.logged && !strings.Contains(logs.String(), "err=") {
				t.Errorf("log line without the cause: %s", logs.String())
			}
		})
	}
}
