// Package penalty slows down password guessing the way Dovecot's auth
// penalty does: every failed login from an address (IPv4 /32, IPv6 /48) or
// for a user doubles the delay the next attempt waits, up to a maximum (15 s
// by default). A correct password still works, only later, so a user who
// mistyped is never locked out; trusted networks (a webmail host) are exempt.
//
// Invariants:
//   - The delay is what remains of the penalty since the last failure, so a
//     client that waited out its penalty logs in at once.
//   - Memory is bounded: each table (addresses, users) holds at most
//     Options.MaxEntries keys, least recently failed first out, and a key
//     with no failure for Options.Expire is forgotten.
//   - Succeed forgets the user's failures but not the address's: the address
//     penalty fades by waiting, so one valid account cannot wipe an address's
//     record between guesses at other accounts.
//   - A nil *Penalty delays nothing and records nothing.
package penalty

import (
	"container/list"
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/roost-mail/roost/auth"
)

// Defaults for the zero Options.
const (
	DefaultInitial    = 2 * time.Second
	DefaultMax        = 15 * time.Second
	DefaultExpire     = time.Hour
	DefaultMaxEntries = 100000
)

// Options configure a Penalty; the zero value gives Dovecot's behaviour.
type Options struct {
	// Initial is the delay after the first failure; each further failure
	// doubles it. Default 2 s.
	Initial time.Duration
	// Max caps the delay (security.auth_penalty_max). Default 15 s.
	Max time.Duration
	// Trusted networks are never delayed and their failures are not
	// counted (security.trusted_networks).
	Trusted []netip.Prefix
	// Expire forgets a key that has not failed for this long. Default 1 h.
	Expire time.Duration
	// MaxEntries bounds each of the two tables. Default 100000.
	MaxEntries int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Sleep waits for d or until ctx is done, returning ctx.Err() then.
	// Default: a timer. Tests inject a fake clock through Now and Sleep.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Penalty records failed logins and computes the delay before the next try.
// It is safe for concurrent use.
type Penalty struct {
	opts  Options // immutable
	mu    sync.Mutex
	addrs table // keyed by address prefix
	users table // keyed by normalised user name
}

// New returns a Penalty with o's zero fields set to their defaults.
func New(o Options) *Penalty {
	if o.Initial <= 0 {
		o.Initial = DefaultInitial
	}
	if o.Max <= 0 {
		o.Max = DefaultMax
	}
	if o.Initial > o.Max {
		o.Initial = o.Max
	}
	if o.Expire <= 0 {
		o.Expire = DefaultExpire
	}
	if o.Expire < o.Max {
		o.Expire = o.Max
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	p := &Penalty{opts: o}
	p.addrs.init(o.MaxEntries)
	p.users.init(o.MaxEntries)
	return p
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait sleeps for the current delay of remote and user, and returns
// ctx.Err() if ctx is done first. Call it before checking a password.
func (p *Penalty) Wait(ctx context.Context, remote netip.Addr, user string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := p.Delay(remote, user)
	if d <= 0 {
		return nil
	}
	return p.opts.Sleep(ctx, d)
}

// Delay returns how long a login attempt from remote for user must wait
// now: the larger of the address's and the user's remaining penalty.
func (p *Penalty) Delay(remote netip.Addr, user string) time.Duration {
	if p == nil || p.trusted(remote) {
		return 0
	}
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.remaining(p.addrs.get(addrKey(remote), now, p.opts.Expire), now)
	if u := p.remaining(p.users.get(userKey(user), now, p.opts.Expire), now); u > d {
		d = u
	}
	return d
}

// Fail records a failed login (wrong password or unknown user) from remote
// for user.
func (p *Penalty) Fail(remote netip.Addr, user string) {
	if p == nil || p.trusted(remote) {
		return
	}
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addrs.fail(addrKey(remote), now, p.opts.Expire)
	p.users.fail(userKey(user), now, p.opts.Expire)
}

// Succeed records a successful login: the user's failures are forgotten.
// The address keeps its record (see the package invariants).
func (p *Penalty) Succeed(remote netip.Addr, user string) {
	if p == nil || p.trusted(remote) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users.remove(userKey(user))
}

func (p *Penalty) trusted(remote netip.Addr) bool {
	remote = remote.Unmap().WithZone("")
	for _, n := range p.opts.Trusted {
		if n.Contains(remote) {
			return true
		}
	}
	return false
}

// remaining is the penalty of e still to wait at now.
func (p *Penalty) remaining(e *entry, now time.Time) time.Duration {
	if e == nil || e.failures == 0 {
		return 0
	}
	d := p.opts.Initial
	for i := 1; i < e.failures && d < p.opts.Max; i++ {
		d *= 2
	}
	d = min(d, p.opts.Max)
	return d - now.Sub(e.last)
}

// addrKey is the penalty key of an address: IPv4 /32, IPv6 /48 (one
// customer's allocation), "" for no address (a unix socket).
func addrKey(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	switch {
	case a.Is4():
		return a.String()
	case a.Is6():
		pfx, _ := a.Prefix(48) // cannot fail for an IPv6 address
		return pfx.String()
	}
	return ""
}

func userKey(user string) string { return auth.Normalize(user) }

// table is a bounded map of failure records, most recently failed first.
type table struct {
	max   int
	order *list.List // of *entry, front = most recent failure
	m     map[string]*list.Element
}

type entry struct {
	key      string
	failures int
	last     time.Time
}

func (t *table) init(max int) {
	t.max = max
	t.order = list.New()
	t.m = make(map[string]*list.Element)
}

// get returns key's live entry, or nil.
func (t *table) get(key string, now time.Time, expire time.Duration) *entry {
	el := t.m[key]
	if el == nil {
		return nil
	}
	e := el.Value.(*entry)
	if now.Sub(e.last) >= expire {
		t.order.Remove(el)
		delete(t.m, key)
		return nil
	}
	return e
}

func (t *table) fail(key string, now time.Time, expire time.Duration) {
	if key == "" {
		return
	}
	t.expire(now, expire)
	if e := t.get(key, now, expire); e != nil {
		if e.failures < 64 {
			e.failures++
		}
		e.last = now
		t.order.MoveToFront(t.m[key])
		return
	}
	for t.order.Len() >= t.max {
		t.remove(t.order.Back().Value.(*entry).key)
	}
	t.m[key] = t.order.PushFront(&entry{key: key, failures: 1, last: now})
}

// expire drops entries from the old end that have not failed for expire;
// amortised O(1) because each entry is dropped once.
func (t *table) expire(now time.Time, expire time.Duration) {
	for el := t.order.Back(); el != nil; el = t.order.Back() {
		e := el.Value.(*entry)
		if now.Sub(e.last) < expire {
			return
		}
		t.order.Remove(el)
		delete(t.m, e.key)
	}
}

func (t *table) remove(key string) {
	if el := t.m[key]; el != nil {
		t.order.Remove(el)
		delete(t.m, key)
	}
}

// Len reports how many addresses and users have a failure record, for
// tests and metrics.
func (p *Penalty) Len() (addrs, users int) {
	if p == nil {
		return 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs.order.Len(), p.users.order.Len()
}
