package auth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
)

func writeUsers(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // past fileauth's CheckInterval
}

func newFileBackend(t *testing.T, content string) (*fileauth.Authenticator, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, content)
	fa, err := fileauth.New(fileauth.Options{Path: path, CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return fa, path
}

// waitUntil polls cond (the cache works on wall-clock TTLs).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func TestCachePasswordChange(t *testing.T) {
	const ttl = 300 * time.Millisecond
	fa, path := newFileBackend(t, "alice:{PLAIN}old\n")
	c := auth.NewCache(fa, ttl, ttl)
	ctx := context.Background()
	cached := time.Now() // entries expire ttl after the backend was asked
	if _, err := c.Authenticate(ctx, "alice", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authenticate(ctx, "alice", "guess"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatal(err)
	}
	changed := time.Now()
	writeUsers(t, path, "alice:{PLAIN}guess\n")
	// The new password reaches the backend at once; the old one and the
	// failed guess are served from the cache until their TTL ends.
	if _, err := c.Authenticate(ctx, "alice", "old"); err != nil && time.Since(cached) < ttl/2 {
		t.Errorf("cached login not served: %v", err)
	}
	if _, err := c.Authenticate(ctx, "alice", "guess"); err == nil && time.Since(cached) < ttl/2 {
		t.Error("negative entry not served")
	}
	waitUntil(t, "the old password stops working", func() bool {
		_, err := c.Authenticate(ctx, "alice", "old")
		return errors.Is(err, auth.ErrInvalidCredentials)
	})
	if d := time.Since(changed); d > ttl+3*time.Second {
		t.Errorf("old password worked for %v after the change (ttl %v)", d, ttl)
	}
	if _, err := c.Authenticate(ctx, "alice", "guess"); err != nil {
		t.Errorf("new password after negative TTL: %v", err)
	}
}

func TestCacheStaleLookupWhenUnavailable(t *testing.T) {
	const ttl = 100 * time.Millisecond
	fa, path := newFileBackend(t, "alice:{PLAIN}pw\nbob:{PLAIN}pw\n")
	c := auth.NewCache(fa, ttl, ttl)
	ctx := context.Background()
	if _, err := c.Lookup(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(ctx, "nobody"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl)
	// alice was seen: delivery to her goes on from the stale entry.
	if id, err := c.Lookup(ctx, "ALICE"); err != nil || id.User != "alice" {
		t.Errorf("stale Lookup = %v, %v", id, err)
	}
	// bob was never cached: a temporary failure, and it is not cached.
	if _, err := c.Lookup(ctx, "bob"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("Lookup(bob) = %v; want ErrUnavailable", err)
	}
	// Logins never use expired entries.
	if _, err := c.Authenticate(ctx, "alice", "pw"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("Authenticate = %v; want ErrUnavailable", err)
	}
	writeUsers(t, path, "alice:{PLAIN}pw\nbob:{PLAIN}pw\n")
	if _, err := c.Lookup(ctx, "bob"); err != nil {
		t.Errorf("ErrUnavailable was cached: %v", err)
	}
	if _, err := c.Authenticate(ctx, "alice", "pw"); err != nil {
		t.Errorf("ErrUnavailable was cached: %v", err)
	}
}

func TestCacheKeepsLister(t *testing.T) {
	fa, _ := newFileBackend(t, "alice:{PLAIN}pw\n")
	for _, a := range []auth.Authenticator{
		auth.NewCache(fa, time.Second, time.Second),
		auth.WithDefaults(fa, auth.Defaults{MailRoot: "/m"}),
		auth.WithDefaults(auth.NewCache(fa, time.Second, 0), auth.Defaults{MailRoot: "/m"}),
	} {
		l, ok := a.(auth.Lister)
		if !ok {
			t.Fatalf("%T does not implement Lister", a)
		}
		if users, err := l.ListUsers(context.Background()); err != nil || len(users) != 1 {
			t.Errorf("ListUsers = %v, %v", users, err)
		}
	}
	if c := auth.NewCache(fa, 0, 0); c != auth.Authenticator(fa) {
		t.Error("NewCache with TTLs 0 should return the backend itself")
	}
}

// counted counts the logins that reach the backend.
type counted struct {
	auth.Authenticator
	logins int
}

func (c *counted) Authenticate(ctx context.Context, u, p string) (*auth.Identity, error) {
	c.logins++
	return c.Authenticator.Authenticate(ctx, u, p)
}

// TestCacheSameAnswerForUnknownUsers: through the stack the daemons use
// (backend, WithDefaults, NewCache), an unknown user and a wrong password
// get the same error, reach the backend the same number of times and are
// cached alike, so neither the answer nor a cache hit tells them apart.
func TestCacheSameAnswerForUnknownUsers(t *testing.T) {
	h, err := fileauth.Hash("SHA512-CRYPT", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	fa, _ := newFileBackend(t, "admin:{PLAIN}admin-pw\nalice:"+h+"\n")
	for _, neg := range []time.Duration{0, time.Minute} {
		b := &counted{Authenticator: fa}
		a := auth.NewCache(auth.WithDefaults(b, auth.Defaults{MailRoot: "/m"}), time.Minute, neg)
		var answers []string
		var calls []int
		for _, user := range []string{"alice", "nobody"} {
			for range 3 {
				_, err := a.Authenticate(context.Background(), user, "wrong")
				if !errors.Is(err, auth.ErrInvalidCredentials) || errors.Is(err, auth.ErrUnavailable) {
					t.Fatalf("%s: %v", user, err)
				}
				answers = append(answers, err.Error())
			}
			calls = append(calls, b.logins)
			b.logins = 0
		}
		for _, s := range answers[1:] {
			if s != answers[0] {
				t.Errorf("negative_ttl %v: answers differ: %q", neg, answers)
				break
			}
		}
		want := 1 // then served from the negative cache
		if neg == 0 {
			want = 3
		}
		if calls[0] != want || calls[1] != want {
			t.Errorf("negative_ttl %v: backend asked %d times for a wrong password, %d for an unknown user; want %d", neg, calls[0], calls[1], want)
		}
	}
}
