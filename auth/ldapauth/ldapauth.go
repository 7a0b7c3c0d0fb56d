// Package ldapauth authenticates users against an LDAP directory (OpenLDAP,
// Active Directory) with github.com/go-ldap/ldap/v3, the way Dovecot's
// auth_bind=yes does: the password is checked by binding as the user
// (RFC 4513 §5.1.3 simple bind), never by reading userPassword.
//
// The user's DN comes from UserDNTemplate ("uid=%u,ou=people,dc=…"), or
// else from a search under BaseDN with UserFilter, made with the service
// account (BindDN). Attributes (canonical name, home, Maildir, quota,
// uid/gid numbers) come from the user's entry. Lookup (delivery, admin
// commands) searches with the service account and needs no password.
//
// Invariants:
//   - Values put into filters are escaped (RFC 4515), into DNs escaped
//     (RFC 4514); an empty password is refused before anything is sent
//     (an empty simple bind is an anonymous bind, RFC 4513 §5.1.2).
//   - Only LDAP result 49 (invalidCredentials) for the user's own bind, or
//     a user the search does not find, is auth.ErrInvalidCredentials; a
//     down, slow or misconfigured server is auth.ErrUnavailable.
//   - A user the search does not find costs a bind too (to a DN without an
//     entry, see decoyRDN), so an unknown name is not a round trip faster
//     than a wrong password.
//   - Connections are pooled (PoolSize per kind: service searches, user
//     binds), dropped on network errors and re-dialled, so a restarted
//     server is used again without restarting Roost. Several URLs fail
//     over in order.
//   - Passwords never appear in logs or errors.
package ldapauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/roost-mail/roost/auth"
)

var errUnavailable = auth.ErrUnavailable

// Options configure an Authenticator; they mirror the auth.ldap config
// section.
type Options struct {
	// URLs are ldap:// or ldaps:// server URLs, tried in order (failover).
	URLs []string
	// StartTLS upgrades ldap:// connections with StartTLS (RFC 4511 §4.14);
	// a server that refuses it is unavailable, never used in clear.
	StartTLS bool
	// CAFile is a PEM file of CA certificates to trust for ldaps:// and
	// StartTLS instead of the system roots; "" uses the system roots.
	CAFile string
	// TLSConfig, if set, is the base TLS client configuration.
	TLSConfig *tls.Config
	// BindDN and BindPassword are the service account for searches and
	// Lookup; BindDN "" searches anonymously.
	BindDN       string
	BindPassword string
	// BaseDN is where users are searched (and listed).
	BaseDN string
	// UserFilter finds a user under BaseDN: %u is the whole login name,
	// %n its local part, %d its domain; each is escaped. Default
	// "(&(objectClass=inetOrgPerson)(uid=%u))".
	UserFilter string
	// UserDNTemplate, if set, makes the user's DN without a search:
	// "uid=%n,ou=people,dc=example,dc=edu".
	UserDNTemplate string
	// Attributes name the attributes read from the user's entry.
	Attributes Attributes
	// Timeout bounds dialling and each operation; default 5s.
	Timeout time.Duration
	// PoolSize is the number of connections per pool; default 4.
	PoolSize int
	// Logger receives server failures; nil discards them.
	Logger *slog.Logger
}

// Attributes name LDAP attributes; "" means not read (User defaults to uid).
type Attributes struct {
	User      string // canonical user name (e.g. uid)
	Home      string // home directory (e.g. homeDirectory)
	Maildir   string // Maildir path, optionally "maildir:/path" (e.g. mailMessageStore)
	Quota     string // quota with Dovecot units, a plain number is bytes (e.g. mailQuota)
	UIDNumber string // e.g. uidNumber
	GIDNumber string // e.g. gidNumber
}

// Authenticator is an auth.Authenticator and auth.Lister over LDAP. It is
// safe for concurrent use; Close releases its connections.
type Authenticator struct {
	opts      Options // immutable
	log       *slog.Logger
	urls      []*url.URL
	tls       *tls.Config
	attrs     []string
	preferred atomic.Int32 // index of the URL that answered last

	service *pool // bound as BindDN (or anonymous): searches, Lookup
	binds   *pool // bound as whichever user logged in last
}

var _ interface {
	auth.Authenticator
	auth.Lister
} = (*Authenticator)(nil)

// New checks opts and reads CAFile; it does not connect, so Roost starts
// while the directory is down (logins then fail with ErrUnavailable).
func New(opts Options) (*Authenticator, error) {
	if len(opts.URLs) == 0 {
		return nil, errors.New("ldapauth: no server URL: set auth.ldap.urls")
	}
	if opts.UserDNTemplate == "" && opts.BaseDN == "" {
		return nil, errors.New("ldapauth: set auth.ldap.user_dn_template, or base_dn and user_filter")
	}
	if opts.UserFilter == "" {
		opts.UserFilter = "(&(objectClass=inetOrgPerson)(uid=%u))"
	}
	if _, err := ldap.CompileFilter(expand(opts.UserFilter, "x@y", ldap.EscapeFilter)); err != nil {
		return nil, fmt.Errorf("ldapauth: user_filter %q: %w", opts.UserFilter, err)
	}
	if opts.Attributes.User == "" {
		opts.Attributes.User = "uid"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 4
	}
	a := &Authenticator{opts: opts, log: opts.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("backend", "ldap")
	for _, s := range opts.URLs {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
			return nil, fmt.Errorf("ldapauth: URL %q: use ldap://host[:port] or ldaps://host[:port]", s)
		}
		a.urls = append(a.urls, u)
		if u.Scheme == "ldap" && !opts.StartTLS && !isLoopback(u.Hostname()) {
			a.log.Warn("LDAP passwords will cross the network in clear text: use ldaps:// or start_tls", "url", u.Redacted())
		}
	}
	var caPEM []byte
	if opts.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(opts.CAFile); err != nil {
			return nil, fmt.Errorf("ldapauth: ca_file: %w", err)
		}
	}
	var err error
	if a.tls, err = newTLSConfig(opts.TLSConfig, caPEM); err != nil {
		return nil, fmt.Errorf("ldapauth: ca_file %s: %w", opts.CAFile, err)
	}
	for _, n := range []string{opts.Attributes.User, opts.Attributes.Home, opts.Attributes.Maildir,
		opts.Attributes.Quota, opts.Attributes.UIDNumber, opts.Attributes.GIDNumber} {
		if n != "" && !slices.Contains(a.attrs, n) {
			a.attrs = append(a.attrs, n)
		}
	}
	if opts.BaseDN == "" && opts.BindDN == "" {
		a.log.Warn("LDAP Lookup (delivery, roostctl) will read user entries anonymously; most ACLs hide them, which makes users look unknown: set auth.ldap.bind_dn")
	}
	a.service = newPool(a, opts.PoolSize, true)
	a.binds = newPool(a, opts.PoolSize, false)
	return a, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func certPool(pemData []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		return nil, errors.New("no PEM certificate found")
	}
	return p, nil
}

// Close closes idle connections. Calls after Close still work; they dial.
func (a *Authenticator) Close() error {
	a.service.close()
	a.binds.close()
	return nil
}

// usable refuses names that cannot be a user before anything is sent.
func usable(u string) bool {
	if u == "" || len(u) > 255 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x20 || u[i] == 0x7f {
			return false
		}
	}
	return true
}

// Authenticate binds as the user with password. See the package doc for
// the errors.
func (a *Authenticator) Authenticate(ctx context.Context, username, password string) (*auth.Identity, error) {
	u := auth.Normalize(username)
	if password == "" || !usable(u) {
		return nil, auth.ErrInvalidCredentials
	}
	var entry *ldap.Entry
	dn := ""
	if a.opts.UserDNTemplate != "" {
		dn = expand(a.opts.UserDNTemplate, u, ldap.EscapeDN)
	} else {
		e, err := a.search(ctx, u)
		if errors.Is(err, auth.ErrNoSuchUser) {
			return nil, a.decoyBind(ctx, u, password)
		}
		if err != nil {
			return nil, err
		}
		entry, dn = e, e.DN
	}
	bound := false
	err := a.binds.do(ctx, func(c *ldap.Conn) error {
		bound = false
		if err := c.Bind(dn, password); err != nil {
			return err
		}
		bound = true
		if entry != nil {
			return nil
		}
		// Template mode: read the entry as the user (self read is allowed
		// by usual ACLs), on the connection already bound.
		e, err := readEntry(c, dn, a.attrs)
		entry = e
		return err
	})
	switch {
	case err == nil:
	case ldap.IsErrorAnyOf(err, ldap.LDAPResultInvalidCredentials):
		return nil, auth.ErrInvalidCredentials
	case bound && isResultError(err):
		// Bound, but the user may not read their entry: ask as the service.
		if entry, err = a.readAsService(ctx, dn); err != nil {
			return nil, a.unavailable(ctx, "reading the user's entry", u, err)
		}
	default:
		return nil, a.unavailable(ctx, "user bind", u, err)
	}
	return a.identity(ctx, u, entry), nil
}

// decoyRDN, under BaseDN, names no entry. In search+bind mode a user the
// search does not find is bound under it anyway, so an unknown name costs
// the search and a refused bind, as a wrong password does, and does not
// answer a round trip sooner. What remains is the directory's own check of
// a real entry's password hash, which a DN without an entry skips.
const decoyRDN = "cn=roost-unknown-user"

// decoyBind binds as decoyRDN with password for the time it takes and
// returns what a wrong password would: auth.ErrInvalidCredentials, or
// auth.ErrUnavailable when the directory could not answer.
func (a *Authenticator) decoyBind(ctx context.Context, u, password string) error {
	err := a.binds.do(ctx, func(c *ldap.Conn) error {
		return c.Bind(decoyRDN+","+a.opts.BaseDN, password)
	})
	switch {
	case err == nil, ldap.IsErrorAnyOf(err, ldap.LDAPResultInvalidCredentials):
		return auth.ErrInvalidCredentials
	case isResultError(err) && !ldap.IsErrorAnyOf(err, ldap.LDAPResultBusy, ldap.LDAPResultUnavailable):
		// Another refusal of a DN without an entry (noSuchObject,
		// unwillingToPerform) still means "no such user".
		return auth.ErrInvalidCredentials
	}
	return a.unavailable(ctx, "user bind", u, err)
}

// isResultError reports an LDAP result code from the server (as opposed to
// a network failure).
func isResultError(err error) bool {
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode != ldap.ErrorNetwork && le.ResultCode < 200
}

func (a *Authenticator) readAsService(ctx context.Context, dn string) (*ldap.Entry, error) {
	var e *ldap.Entry
	err := a.service.do(ctx, func(c *ldap.Conn) error {
		var err error
		e, err = readEntry(c, dn, a.attrs)
		return err
	})
	return e, err
}

func readEntry(c *ldap.Conn, dn string, attrs []string) (*ldap.Entry, error) {
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, "(objectClass=*)", attrs, nil))
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 {
		return nil, ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("entry not found"))
	}
	return res.Entries[0], nil
}

// unavailable logs why the directory could not answer and wraps
// auth.ErrUnavailable.
func (a *Authenticator) unavailable(ctx context.Context, what, user string, err error) error {
	if errors.Is(err, auth.ErrUnavailable) {
		return err
	}
	a.log.WarnContext(ctx, "LDAP "+what+" failed", "user", user, "err", err)
	return fmt.Errorf("%w: LDAP %s: %w", auth.ErrUnavailable, what, err)
}

// search finds the one entry for u under BaseDN with the service account.
func (a *Authenticator) search(ctx context.Context, u string) (*ldap.Entry, error) {
	filter := expand(a.opts.UserFilter, u, ldap.EscapeFilter)
	var entries []*ldap.Entry
	err := a.service.do(ctx, func(c *ldap.Conn) error {
		res, err := c.Search(ldap.NewSearchRequest(a.opts.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			2, 0, false, filter, a.attrs, nil))
		if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return err
		}
		if res != nil {
			entries = res.Entries
		}
		return nil
	})
	if err != nil {
		return nil, a.unavailable(ctx, "user search", u, err)
	}
	switch len(entries) {
	case 0:
		return nil, auth.ErrNoSuchUser
	case 1:
		return entries[0], nil
	}
	a.log.WarnContext(ctx, "LDAP user filter matches several entries: refusing; make user_filter unique", "user", u)
	return nil, auth.ErrNoSuchUser
}

// Lookup finds a user without a password: a search under BaseDN, or a
// read of the templated DN when there is no BaseDN.
func (a *Authenticator) Lookup(ctx context.Context, username string) (*auth.Identity, error) {
	u := auth.Normalize(username)
	if !usable(u) {
		return nil, auth.ErrNoSuchUser
	}
	if a.opts.BaseDN != "" {
		e, err := a.search(ctx, u)
		if err != nil {
			return nil, err
		}
		return a.identity(ctx, u, e), nil
	}
	e, err := a.readAsService(ctx, expand(a.opts.UserDNTemplate, u, ldap.EscapeDN))
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		return nil, auth.ErrNoSuchUser
	case err != nil:
		return nil, a.unavailable(ctx, "user lookup", u, err)
	}
	return a.identity(ctx, u, e), nil
}

// ListUsers returns the canonical names of every entry UserFilter matches
// with %u, %n and %d as wildcards, sorted. It needs BaseDN.
func (a *Authenticator) ListUsers(ctx context.Context) ([]string, error) {
	if a.opts.BaseDN == "" {
		return nil, errors.New("listing LDAP users needs auth.ldap.base_dn")
	}
	filter := strings.NewReplacer("%u", "*", "%n", "*", "%d", "*", "%%", "%").Replace(a.opts.UserFilter)
	var names []string
	err := a.service.do(ctx, func(c *ldap.Conn) error {
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(a.opts.BaseDN, ldap.ScopeWholeSubtree,
			ldap.NeverDerefAliases, 0, 0, false, filter, []string{a.opts.Attributes.User}, nil), 500)
		if err != nil {
			return err
		}
		names = names[:0]
		for _, e := range res.Entries {
			if n := auth.Normalize(e.GetEqualFoldAttributeValue(a.opts.Attributes.User)); n != "" {
				names = append(names, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, a.unavailable(ctx, "user listing", "", err)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// identity builds the Identity from an entry. A bad attribute value is
// logged and ignored, so one typo does not lock the user out.
func (a *Authenticator) identity(ctx context.Context, login string, e *ldap.Entry) *auth.Identity {
	at := a.opts.Attributes
	get := func(name string) string {
		if name == "" || e == nil {
			return ""
		}
		return strings.TrimSpace(e.GetEqualFoldAttributeValue(name))
	}
	id := &auth.Identity{User: login, QuotaBytes: -1, QuotaMessages: -1, UID: -1, GID: -1, Backend: "ldap"}
	if n := auth.Normalize(get(at.User)); n != "" {
		id.User = n
	}
	id.Home = a.absPath(ctx, id.User, at.Home, get(at.Home))
	md := get(at.Maildir)
	if rest, ok := strings.CutPrefix(md, "maildir:"); ok {
		md, _, _ = strings.Cut(rest, ":") // Dovecot's "maildir:/path:INDEX=…"
	}
	id.Maildir = a.absPath(ctx, id.User, at.Maildir, md)
	if q := get(at.Quota); q != "" {
		if n, err := auth.ParseSize(q, 1); err == nil {
			id.QuotaBytes = n
		} else {
			a.log.WarnContext(ctx, "LDAP quota attribute ignored", "user", id.User, "attribute", at.Quota, "err", err)
		}
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{at.UIDNumber, &id.UID}, {at.GIDNumber, &id.GID}} {
		if v := get(f.name); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				*f.dst = n
			} else {
				a.log.WarnContext(ctx, "LDAP id attribute ignored: not a number", "user", id.User, "attribute", f.name)
			}
		}
	}
	return id
}

// absPath returns p cleaned if it is absolute; otherwise it logs and
// returns "", so the configured default applies.
func (a *Authenticator) absPath(ctx context.Context, user, attr, p string) string {
	if p == "" {
		return ""
	}
	if !filepath.IsAbs(p) {
		a.log.WarnContext(ctx, "LDAP path attribute ignored: not an absolute path", "user", user, "attribute", attr)
		return ""
	}
	return filepath.Clean(p)
}

// expand replaces %u (login), %n (local part), %d (domain) and %% in
// tmpl, escaping each value with esc.
func expand(tmpl, user string, esc func(string) string) string {
	local, domain, _ := strings.Cut(user, "@")
	return strings.NewReplacer("%u", esc(user), "%n", esc(local), "%d", esc(domain), "%%", "%").Replace(tmpl)
}
