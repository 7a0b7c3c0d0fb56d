// Package auth defines how Roost checks passwords and looks users up. The
// daemons and roostctl see only the Authenticator interface; auth/fileauth
// (Dovecot-compatible passwd-file) and auth/ldapauth implement it, and the
// concrete backend is chosen in cmd/ from the config (auth.backend).
//
// Login names are normalised the same way everywhere by Normalize: surrounding
// white space is removed and the name is lower-cased; "user" and
// "user@domain" are both valid and are different users.
package auth

import (
	"context"
	"errors"
	"strings"
)

// Errors that keep "wrong user or password" apart from "could not check".
var (
	// ErrInvalidCredentials: unknown user or wrong password. Protocols
	// answer with an authentication failure and must not say which.
	ErrInvalidCredentials = errors.New("invalid user name or password")
	// ErrNoSuchUser: Lookup found no such user (LMTP 550 5.1.1).
	ErrNoSuchUser = errors.New("no such user")
	// ErrUnavailable: the backend could not answer (LDAP down, passwd-file
	// unreadable). Protocols answer with a temporary failure
	// ([UNAVAILABLE], [SYS/TEMP], 451 4.3.0).
	ErrUnavailable = errors.New("authentication backend unavailable")
)

// Identity is what the daemons know about an authenticated or looked-up user.
type Identity struct {
	// User is the canonical user name (for logs, locks and Delivered-To).
	User string
	// Home is the user's home directory, or "" if the backend gives none.
	Home string
	// Maildir is the Maildir root path, or "" to derive it from Home or
	// the configured mail root (see Defaults).
	Maildir string
	// QuotaBytes is the storage limit: -1 = not set by the backend (use
	// the configured default), 0 = unlimited.
	QuotaBytes int64
	// QuotaMessages is the message-count limit, with the same conventions.
	QuotaMessages int64
	// UID and GID own the user's files in the system-users layout; -1 if unset.
	UID, GID int
	// Backend names the backend that answered ("file", "ldap").
	Backend string
}

// Authenticator checks passwords and looks users up. Implementations are
// safe for concurrent use, never log passwords or hashes, and compare
// secrets in constant time.
type Authenticator interface {
	// Authenticate checks a password. It returns ErrInvalidCredentials for
	// an unknown user, a wrong or empty password, and an error wrapping
	// ErrUnavailable when it could not check.
	Authenticate(ctx context.Context, username, password string) (*Identity, error)
	// Lookup finds a user without a password (delivery, admin commands).
	// It returns ErrNoSuchUser or an error wrapping ErrUnavailable.
	Lookup(ctx context.Context, username string) (*Identity, error)
}

// Lister is implemented by backends that can enumerate their users
// (roostctl quota report).
type Lister interface {
	ListUsers(ctx context.Context) ([]string, error)
}

// Normalize returns the canonical form of a login name.
func Normalize(username string) string {
	return strings.ToLower(strings.TrimSpace(username))
}
