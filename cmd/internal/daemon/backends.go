package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/backend"
)

// openAuth builds the configured Authenticator with site defaults and the
// optional cache.
func (e *Env) openAuth(ctx context.Context) (auth.Authenticator, error) {
	c := e.Config
	var a auth.Authenticator
	switch c.Auth.Backend {
	case "file":
		fa, err := fileauth.New(fileauth.Options{Path: c.Auth.File.Path, Logger: e.Logger})
		if err != nil {
			return nil, fmt.Errorf("auth.file: %w", err)
		}
		e.closeLater(fa)
		a = fa
	default:
		return nil, fmt.Errorf("auth.backend %q is not available in this build", c.Auth.Backend)
	}
	a = auth.WithDefaults(a, auth.Defaults{MailRoot: c.Mail.Root, QuotaBytes: int64(c.Quota.Default)})
	if c.Auth.Cache.TTL > 0 {
		a = auth.NewCache(a, c.Auth.Cache.TTL, c.Auth.Cache.NegativeTTL)
	}
	return a, nil
}

// openStore builds the Maildir store.
func (e *Env) openStore() (backend.Store, error) {
	return nil, errors.New("the maildir store is not available in this build")
}
