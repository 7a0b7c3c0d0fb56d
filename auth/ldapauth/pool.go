package ldapauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// pool is a small set of LDAP connections (go-ldap has none). At most size
// operations run at once; idle connections are kept for the next one, and
// a connection that failed on the network is dropped and never reused.
type pool struct {
	a       *Authenticator
	service bool // connections are bound as the service account
	sem     chan struct{}
	idle    chan *conn
}

// conn is a pooled connection and the server it goes to.
type conn struct {
	*ldap.Conn
	server int // index into Authenticator.urls
}

func newPool(a *Authenticator, size int, service bool) *pool {
	return &pool{a: a, service: service, sem: make(chan struct{}, size), idle: make(chan *conn, size)}
}

// do runs fn on a connection. A connection taken from the idle set may have
// died while it waited (the server restarted); if fn then fails on the
// network, do retries once on a newly dialled connection. A newly dialled
// connection that fails on the network (a server that accepts connections
// and then never answers) makes the next dial start with the next URL.
//
// Waiting for a free connection is bounded by the timeout too: when the
// server hangs, every connection is busy timing out, and a login queued
// behind them would otherwise wait one timeout per login ahead of it.
func (p *pool) do(ctx context.Context, fn func(*ldap.Conn) error) error {
	wait := p.a.opTimeout(ctx)
	timer := time.NewTimer(wait)
	select {
	case p.sem <- struct{}{}:
		timer.Stop()
	case <-ctx.Done():
		timer.Stop()
		return fmt.Errorf("%w: waiting for an LDAP connection: %w", errUnavailable, ctx.Err())
	case <-timer.C:
		return fmt.Errorf("%w: all %d LDAP connections stayed busy for %v (server slow or hung? raise auth.ldap.pool_size if it is only busy)",
			errUnavailable, cap(p.sem), wait)
	}
	defer func() { <-p.sem }()
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return err
		}
		c.SetTimeout(p.a.opTimeout(ctx))
		err = fn(c.Conn)
		if !isNetworkError(err) && !c.IsClosing() {
			p.put(c)
			return err
		}
		c.Close()
		if !reused && ctx.Err() == nil {
			p.a.demote(ctx, c.server, err)
		}
		if !reused || attempt > 0 || ctx.Err() != nil {
			return err
		}
	}
}

func (p *pool) get(ctx context.Context) (c *conn, reused bool, err error) {
	for {
		select {
		case c := <-p.idle:
			if !c.IsClosing() {
				return c, true, nil
			}
			c.Close()
			continue
		default:
		}
		lc, n, err := p.a.dial(ctx)
		if err != nil {
			return nil, false, err
		}
		c := &conn{Conn: lc, server: n}
		if p.service && p.a.opts.BindDN != "" {
			c.SetTimeout(p.a.opTimeout(ctx))
			if err := c.Bind(p.a.opts.BindDN, p.a.opts.BindPassword); err != nil {
				c.Close()
				if isNetworkError(err) {
					if ctx.Err() == nil {
						p.a.demote(ctx, n, err)
					}
					return nil, false, fmt.Errorf("%w: LDAP service account bind: %w", errUnavailable, err)
				}
				p.a.log.ErrorContext(ctx, "LDAP service account bind failed: check auth.ldap.bind_dn and bind_password_file", "bind_dn", p.a.opts.BindDN, "err", err)
				return nil, false, fmt.Errorf("%w: LDAP service account bind as %s: %w", errUnavailable, p.a.opts.BindDN, err)
			}
		}
		return c, false, nil
	}
}

func (p *pool) put(c *conn) {
	select {
	case p.idle <- c:
	default:
		c.Close()
	}
}

func (p *pool) close() {
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			return
		}
	}
}

// isNetworkError reports errors after which a connection must not be used.
func isNetworkError(err error) bool {
	return err != nil && (ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || errors.Is(err, net.ErrClosed))
}

// demote makes the next dial start with the URL after server n, unless an
// earlier failure already moved on, after a new connection to n failed on
// the network: n accepts connections but does not answer. With one URL it
// changes nothing.
func (a *Authenticator) demote(ctx context.Context, n int, err error) {
	next := (n + 1) % len(a.urls)
	if next != n && a.preferred.CompareAndSwap(int32(n), int32(next)) {
		a.log.WarnContext(ctx, "LDAP server accepted a connection but did not answer: trying the next URL first",
			"url", a.urls[n].Redacted(), "next", a.urls[next].Redacted(), "err", err)
	}
}

// dial connects to the first URL that answers, starting with the one that
// worked last, so a dead server costs one timeout per failover, not one per
// connection, and returns the index of the URL. StartTLS is run when
// configured (never on ldaps://).
func (a *Authenticator) dial(ctx context.Context) (*ldap.Conn, int, error) {
	var errs []error
	start := int(a.preferred.Load())
	for i := range a.urls {
		n := (start + i) % len(a.urls)
		u := a.urls[n]
		c, err := a.dialURL(ctx, u)
		if err != nil {
			a.log.WarnContext(ctx, "LDAP server unreachable", "url", u.String(), "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", u.Redacted(), err))
			continue
		}
		a.preferred.Store(int32(n))
		return c, n, nil
	}
	return nil, 0, fmt.Errorf("%w: no LDAP server answered: %w", errUnavailable, errors.Join(errs...))
}

func (a *Authenticator) dialURL(ctx context.Context, u *url.URL) (*ldap.Conn, error) {
	timeout := a.opTimeout(ctx)
	tc := a.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	d := &net.Dialer{Timeout: timeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	c, err := ldap.DialURL(u.String(), ldap.DialWithDialer(d), ldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(timeout)
	if a.opts.StartTLS && u.Scheme == "ldap" {
		if err := c.StartTLS(tc); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS: %w", err)
		}
	}
	return c, nil
}

// opTimeout is the timeout for one LDAP operation: Options.Timeout, or
// less if ctx ends sooner.
func (a *Authenticator) opTimeout(ctx context.Context) time.Duration {
	t := a.opts.Timeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < t {
			t = max(left, time.Millisecond)
		}
	}
	return t
}

// newTLSConfig builds the client TLS configuration: opts.TLSConfig (or a
// default with TLS 1.2 at least), trusting only CAFile's certificates when
// one is given.
func newTLSConfig(base *tls.Config, caPEM []byte) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		tc = base.Clone()
	}
	if caPEM != nil {
		pool, err := certPool(caPEM)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
