package daemon

import (
	"fmt"
	"os"
	"strings"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/auth/ldapauth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
)

// openAuth builds the configured Authenticator with site defaults and the
// optional cache.
func (e *Env) openAuth() (auth.Authenticator, error) {
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
	case "ldap":
		la, err := e.openLDAP()
		if err != nil {
			return nil, err
		}
		e.closeLater(la)
		a = la
	default:
		return nil, fmt.Errorf("auth.backend %q: use file or ldap", c.Auth.Backend)
	}
	a = auth.WithDefaults(a, auth.Defaults{MailRoot: c.Mail.Root, QuotaBytes: int64(c.Quota.Default)})
	if c.Auth.Cache.TTL > 0 {
		a = auth.NewCache(a, c.Auth.Cache.TTL, c.Auth.Cache.NegativeTTL)
	}
	return a, nil
}

// openLDAP builds the LDAP backend; it does not connect yet, so the daemon
// starts while the directory is down.
func (e *Env) openLDAP() (*ldapauth.Authenticator, error) {
	l := e.Config.Auth.LDAP
	var password string
	if l.BindPasswordFile != "" {
		b, err := os.ReadFile(l.BindPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("auth.ldap.bind_password_file: %w (the file must be readable by the daemon's user)", err)
		}
		// One line, as "echo secret > file" writes it.
		password = strings.TrimRight(string(b), "\r\n")
		if fi, err := os.Stat(l.BindPasswordFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
			e.Logger.Warn("the LDAP service password file is readable by every user: chmod o-r it",
				"file", l.BindPasswordFile, "mode", fi.Mode().Perm().String())
		}
	}
	la, err := ldapauth.New(ldapauth.Options{
		URLs:           l.URLs,
		StartTLS:       l.StartTLS,
		CAFile:         l.CAFile,
		BindDN:         l.BindDN,
		BindPassword:   password,
		BaseDN:         l.BaseDN,
		UserFilter:     l.UserFilter,
		UserDNTemplate: l.UserDNTemplate,
		Attributes: ldapauth.Attributes{
			User:      l.Attributes.User,
			Home:      l.Attributes.Home,
			Maildir:   l.Attributes.Maildir,
			Quota:     l.Attributes.Quota,
			UIDNumber: l.Attributes.UID,
			GIDNumber: l.Attributes.GID,
		},
		Timeout:  l.Timeout,
		PoolSize: l.PoolSize,
		Logger:   e.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("auth.ldap: %w", err)
	}
	return la, nil
}

// openStore builds the Maildir store.
func (e *Env) openStore() backend.Store {
	c := e.Config
	s := maildir.New(maildir.Options{
		SpecialUse:   c.Mail.SpecialUse,
		Fsync:        c.Mail.Fsync,
		IncludeTrash: c.Quota.IncludeTrash,
		GracePercent: c.Quota.GracePercent,
		Logger:       e.Logger,
		// Only imapd creates folders; the limit is the IMAP one.
		MaxMailboxes: c.IMAP.MaxMailboxes,
		// Sizes are measured in the background by the daemons that serve
		// clients; a delivery opens a mailbox only for a moment.
		NoSizeMeasurer: e.Name != "imapd" && e.Name != "pop3d",
	})
	e.closeLater(s)
	return s
}
