package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// countingBackend is a white-box stand-in that can fail on demand; the
// behaviour against a real backend is in cache_test.go.
type countingBackend struct {
	calls int
	down  bool
}

func (b *countingBackend) Authenticate(_ context.Context, u, p string) (*Identity, error) {
	b.calls++
	switch {
	case b.down:
		return nil, fmt.Errorf("%w: test backend down", ErrUnavailable)
	case p != "pw":
		return nil, ErrInvalidCredentials
	}
	return &Identity{User: u, QuotaBytes: -1}, nil
}

func (b *countingBackend) Lookup(_ context.Context, u string) (*Identity, error) {
	b.calls++
	if b.down {
		return nil, fmt.Errorf("%w: test backend down", ErrUnavailable)
	}
	return &Identity{User: u, QuotaBytes: -1}, nil
}

func TestCacheInternals(t *testing.T) {
	now := time.Unix(1e9, 0)
	b := &countingBackend{}
	a := newCache(b, time.Minute, time.Second, func() time.Time { return now })
	c := a.(*cache)
	ctx := context.Background()
	const secret = "pw"
	for range 3 {
		if _, err := a.Authenticate(ctx, "alice", secret); err != nil {
			t.Fatal(err)
		}
	}
	if b.calls != 1 {
		t.Errorf("backend called %d times, want 1", b.calls)
	}
	if dump := fmt.Sprintf("%#v %#v", c.logins, c.lookups); strings.Contains(dump, `"pw"`) || strings.Contains(dump, secret+"\\x00") {
		t.Errorf("cache holds the password: %s", dump)
	}
	// A returned identity is a copy: changing it does not change the cache.
	id, _ := a.Authenticate(ctx, "alice", secret)
	id.User = "mallory"
	if id2, _ := a.Authenticate(ctx, "alice", secret); id2.User != "alice" {
		t.Error("cached identity was modified through a returned pointer")
	}
	// Stale Lookups are served for at most maxStale after expiry.
	b.down = true
	now = now.Add(time.Minute + maxStale - time.Second)
	if _, err := a.Lookup(ctx, "alice"); err != nil {
		t.Errorf("stale lookup within maxStale: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := a.Lookup(ctx, "alice"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("stale lookup past maxStale = %v", err)
	}
	// Sweeping keeps the maps bounded by live entries.
	b.down = false
	for i := range 3 * sweepEvery {
		a.Authenticate(ctx, fmt.Sprint("u", i), "wrong")
		now = now.Add(10 * time.Millisecond)
	}
	c.mu.Lock()
	n := len(c.logins)
	c.mu.Unlock()
	if n > sweepEvery+int(time.Second/(10*time.Millisecond)) {
		t.Errorf("%d login entries after sweeping", n)
	}
}
