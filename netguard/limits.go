package netguard

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// Limits are the connection limits of one daemon, shared by all its
// listeners: security.max_connections and security.max_ip_connections.
// A nil *Limits limits nothing. It is safe for concurrent use.
type Limits struct {
	max    int            // immutable; 0 = no limit
	exempt []netip.Prefix // immutable
	perIP  *Limiter       // nil: no per-address limit
	active atomic.Int64
}

// NewLimits allows maxConns open connections in all (0 = no limit) and
// maxPerIP from one client address (0 = no limit). Addresses in exempt are
// not subject to maxPerIP (a webmail host opens many connections for many
// users); unix-socket peers have no address and are not either.
func NewLimits(maxConns, maxPerIP int, exempt []netip.Prefix) *Limits {
	l := &Limits{max: maxConns, exempt: exempt}
	if maxPerIP > 0 {
		l.perIP = NewLimiter(maxPerIP)
	}
	return l
}

// Active returns the number of open connections, including those whose
// PROXY header is still being read.
func (l *Limits) Active() int {
	if l == nil {
		return 0
	}
	return int(l.active.Load())
}

func (l *Limits) acquire() bool {
	if l == nil {
		return true
	}
	if n := l.active.Add(1); l.max > 0 && n > int64(l.max) {
		l.active.Add(-1)
		return false
	}
	return true
}

func (l *Limits) release() {
	if l != nil {
		l.active.Add(-1)
	}
}

func (l *Limits) acquireIP(a netip.Addr) (release func(), ok bool) {
	if l == nil || l.perIP == nil || !a.IsValid() || contains(l.exempt, a) {
		return func() {}, true
	}
	return l.perIP.Acquire(a.String())
}

func contains(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Limiter counts concurrent holders of a key (an address, or user+address
// for imap.max_user_ip_connections) and refuses more than a maximum. It is
// safe for concurrent use.
type Limiter struct {
	max int // immutable; 0 = unlimited
	mu  sync.Mutex
	n   map[string]int
}

// NewLimiter returns a Limiter allowing max holders per key; max <= 0
// allows any number (Acquire then only counts).
func NewLimiter(max int) *Limiter {
	return &Limiter{max: max, n: make(map[string]int)}
}

// Acquire takes one slot of key. If ok, the caller must call release
// exactly once when done (later calls do nothing).
func (l *Limiter) Acquire(key string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.n[key] >= l.max {
		return func() {}, false
	}
	l.n[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.n[key]--; l.n[key] <= 0 {
				delete(l.n, key)
			}
		})
	}, true
}

// Count returns the current holders of key.
func (l *Limiter) Count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[key]
}
