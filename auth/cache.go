package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// Cache limits. A lookup entry outlives its TTL by at most maxStale so that
// Lookup can still answer while the backend is down; the maps are swept of
// dead entries every sweepEvery insertions and emptied past maxEntries.
const (
	maxStale   = time.Hour
	sweepEvery = 1024
	maxEntries = 200000
)

// NewCache wraps a with a positive and negative cache, for backends that
// are slow (LDAP across a campus). ttl keeps successful logins and lookups,
// negativeTTL keeps wrong passwords and unknown users; 0 turns that half
// off, and with both 0 NewCache returns a itself.
//
// Logins are cached by user name plus an HMAC-SHA256 of the password under
// a random per-process key, never the password: a changed password reaches
// the backend at once (its key differs), and the old one stops working
// when its entry expires, within ttl. Errors wrapping ErrUnavailable are
// never cached. When the backend is unavailable, Lookup answers from a
// cached identity even if it expired (up to an hour), so delivery to users
// seen recently goes on; Authenticate never uses expired entries.
// If a implements Lister, so does the result (uncached).
func NewCache(a Authenticator, ttl, negativeTTL time.Duration) Authenticator {
	return newCache(a, ttl, negativeTTL, time.Now)
}

func newCache(a Authenticator, ttl, negativeTTL time.Duration, now func() time.Time) Authenticator {
	if ttl <= 0 && negativeTTL <= 0 {
		return a
	}
	c := &cache{next: a, ttl: ttl, neg: negativeTTL, now: now,
		logins: map[loginKey]loginEntry{}, lookups: map[string]lookupEntry{}}
	rand.Read(c.key[:]) // never fails: it crashes the program instead (Go 1.24)
	if l, ok := a.(Lister); ok {
		return &listingCache{cache: c, l: l}
	}
	return c
}

type loginKey struct {
	user string
	mac  [sha256.Size]byte
}

type loginEntry struct {
	id  *Identity // nil: wrong password
	exp time.Time
}

type lookupEntry struct {
	id  *Identity // nil: no such user
	exp time.Time
}

type cache struct {
	next     Authenticator
	ttl, neg time.Duration
	now      func() time.Time
	key      [32]byte // immutable after newCache

	mu      sync.Mutex
	logins  map[loginKey]loginEntry
	lookups map[string]lookupEntry
	inserts int
}

type listingCache struct {
	*cache
	l Lister
}

func (c *listingCache) ListUsers(ctx context.Context) ([]string, error) {
	return c.l.ListUsers(ctx)
}

func (c *cache) mac(user, password string) loginKey {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	k := loginKey{user: user}
	h.Sum(k.mac[:0])
	return k
}

func clone(id *Identity) *Identity {
	c := *id
	return &c
}

func (c *cache) Authenticate(ctx context.Context, username, password string) (*Identity, error) {
	u := Normalize(username)
	if password == "" {
		return c.next.Authenticate(ctx, u, password)
	}
	k := c.mac(u, password)
	now := c.now()
	c.mu.Lock()
	e, ok := c.logins[k]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		if e.id == nil {
			return nil, ErrInvalidCredentials
		}
		return clone(e.id), nil
	}
	id, err := c.next.Authenticate(ctx, u, password)
	switch {
	case err == nil && c.ttl > 0:
		c.mu.Lock()
		c.logins[k] = loginEntry{id: clone(id), exp: now.Add(c.ttl)}
		c.lookups[id.User] = lookupEntry{id: clone(id), exp: now.Add(c.ttl)}
		c.insertedLocked(now)
		c.mu.Unlock()
	case errors.Is(err, ErrInvalidCredentials) && !errors.Is(err, ErrUnavailable) && c.neg > 0:
		c.mu.Lock()
		c.logins[k] = loginEntry{exp: now.Add(c.neg)}
		c.insertedLocked(now)
		c.mu.Unlock()
	}
	return id, err
}

func (c *cache) Lookup(ctx context.Context, username string) (*Identity, error) {
	u := Normalize(username)
	now := c.now()
	c.mu.Lock()
	e, ok := c.lookups[u]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		if e.id == nil {
			return nil, ErrNoSuchUser
		}
		return clone(e.id), nil
	}
	id, err := c.next.Lookup(ctx, u)
	switch {
	case err == nil && c.ttl > 0:
		c.mu.Lock()
		c.lookups[u] = lookupEntry{id: clone(id), exp: now.Add(c.ttl)}
		c.insertedLocked(now)
		c.mu.Unlock()
	case errors.Is(err, ErrUnavailable):
		// Stale but known beats a temporary failure for every delivery.
		if ok && e.id != nil && now.Before(e.exp.Add(maxStale)) {
			return clone(e.id), nil
		}
	case errors.Is(err, ErrNoSuchUser) && c.neg > 0:
		c.mu.Lock()
		c.lookups[u] = lookupEntry{exp: now.Add(c.neg)}
		c.insertedLocked(now)
		c.mu.Unlock()
	}
	return id, err
}

// insertedLocked counts an insertion and sweeps dead entries now and then,
// so the maps stay bounded by the users seen within the TTLs.
func (c *cache) insertedLocked(now time.Time) {
	c.inserts++
	if c.inserts%sweepEvery != 0 && len(c.logins)+len(c.lookups) < maxEntries {
		return
	}
	for k, e := range c.logins {
		if !now.Before(e.exp) {
			delete(c.logins, k)
		}
	}
	for k, e := range c.lookups {
		if !now.Before(e.exp.Add(maxStale)) {
			delete(c.lookups, k)
		}
	}
	if len(c.logins)+len(c.lookups) >= maxEntries {
		clear(c.logins)
		clear(c.lookups)
	}
}
