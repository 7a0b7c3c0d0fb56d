package auth

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Defaults are the site-wide values WithDefaults fills in when a backend
// gives none.
type Defaults struct {
	// MailRoot holds the Maildirs of users whose backend entry names no
	// Maildir and no home (config mail.root).
	MailRoot string
	// QuotaBytes replaces QuotaBytes -1 (config quota.default; 0 = unlimited).
	QuotaBytes int64
	// QuotaMessages replaces QuotaMessages -1 (0 = unlimited).
	QuotaMessages int64
}

// WithDefaults wraps a so that every Identity it returns has a Maildir path
// and quota limits:
//
//   - Maildir: the backend's Maildir, else Home+"/Maildir", else
//     <MailRoot>/<user>/Maildir for "user" and
//     <MailRoot>/<domain>/<local>/Maildir for "local@domain".
//   - QuotaBytes and QuotaMessages of -1 become d.QuotaBytes and
//     d.QuotaMessages.
//
// Login names are normalised (Normalize) before they reach a, and names
// that could escape the mail root are refused before any backend is asked
// (ErrInvalidCredentials from Authenticate, ErrNoSuchUser from Lookup); see
// ValidUsername. If a implements Lister, so does the result.
func WithDefaults(a Authenticator, d Defaults) Authenticator {
	w := &defaulter{next: a, d: d}
	if l, ok := a.(Lister); ok {
		return &listingDefaulter{defaulter: w, l: l}
	}
	return w
}

type defaulter struct {
	next Authenticator
	d    Defaults
}

type listingDefaulter struct {
	*defaulter
	l Lister
}

func (w *listingDefaulter) ListUsers(ctx context.Context) ([]string, error) {
	return w.l.ListUsers(ctx)
}

func (w *defaulter) Authenticate(ctx context.Context, username, password string) (*Identity, error) {
	u := Normalize(username)
	if ValidUsername(u) != nil {
		return nil, ErrInvalidCredentials
	}
	id, err := w.next.Authenticate(ctx, u, password)
	if err != nil {
		return nil, err
	}
	if err := w.fill(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCredentials, err)
	}
	return id, nil
}

func (w *defaulter) Lookup(ctx context.Context, username string) (*Identity, error) {
	u := Normalize(username)
	if ValidUsername(u) != nil {
		return nil, ErrNoSuchUser
	}
	id, err := w.next.Lookup(ctx, u)
	if err != nil {
		return nil, err
	}
	if err := w.fill(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSuchUser, err)
	}
	return id, nil
}

// fill completes id in place: every Authenticator in Roost returns a fresh
// Identity per call, so changing it affects no other caller.
func (w *defaulter) fill(id *Identity) error {
	if id.QuotaBytes < 0 {
		id.QuotaBytes = w.d.QuotaBytes
	}
	if id.QuotaMessages < 0 {
		id.QuotaMessages = w.d.QuotaMessages
	}
	if id.Maildir != "" {
		return nil
	}
	if id.Home != "" {
		id.Maildir = filepath.Join(id.Home, "Maildir")
		return nil
	}
	p, err := MailRootPath(w.d.MailRoot, id.User)
	if err != nil {
		return err
	}
	id.Maildir = p
	return nil
}

// MailRootPath returns the Maildir of a user that has no home: <root>/<user>/Maildir,
// or <root>/<domain>/<local>/Maildir for "local@domain". The user name must
// already be normalised and pass ValidUsername.
func MailRootPath(root, user string) (string, error) {
	if err := ValidUsername(user); err != nil {
		return "", err
	}
	if root == "" {
		return "", errors.New("no mail root configured and the user has no home or Maildir: set mail.root")
	}
	if local, domain, ok := strings.Cut(user, "@"); ok {
		return filepath.Join(root, domain, local, "Maildir"), nil
	}
	return filepath.Join(root, user, "Maildir"), nil
}

// ValidUsername reports why a normalised login name cannot be used: it is
// empty or longer than 255 bytes, contains "/", "\", "..", NUL or another
// control character, has more than one "@", or has an empty local or domain
// part or one that is ".". Such names could otherwise point a Maildir path
// outside the mail root.
func ValidUsername(u string) error {
	if u == "" || len(u) > 255 {
		return errors.New("user name is empty or longer than 255 bytes")
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
			return fmt.Errorf("user name contains a forbidden character at byte %d", i)
		}
	}
	if strings.Contains(u, "..") {
		return errors.New(`user name contains ".."`)
	}
	if strings.Count(u, "@") > 1 {
		return errors.New(`user name contains more than one "@"`)
	}
	local, domain, hasDomain := strings.Cut(u, "@")
	if local == "" || local == "." || (hasDomain && (domain == "" || domain == ".")) {
		return errors.New("user name has an empty local or domain part")
	}
	return nil
}
